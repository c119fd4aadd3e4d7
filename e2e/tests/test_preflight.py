"""The health bridge's pre-flight against the TF Serving stand-in: golden requests over gRPC (and
REST where gRPC cannot carry them), the comparison with expected outputs, and readiness that waits
for them. One stand-in process serves every test; the bridges run in the test's own event loop."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from e2e.standin.models import write_version
from tfleet.health.bridge import BridgeConfig, HealthBridge
from tfleet.health.preflight import GRPC, REST, PreflightConfig, PreflightRunner
from tfleet.health.verdicts import parse_bridge_status

from .standin_support import StandIn

MODEL = "m"
# y = 0.5 x + 2, whose first run of a signature takes 0.3 s longer (TensorFlow's lazy set-up).
CARD = {"function": {"linear": {"a": 0.5, "b": 2}}, "first_run_seconds": 0.3}
METRICS = "/monitoring/prometheus/metrics"


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    root = tmp_path_factory.mktemp("preflight")
    write_version(root / MODEL, 1, CARD)
    monitoring = root / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true path: "{METRICS}" }}')
    server = StandIn(root / "run", [f"--model_name={MODEL}", f"--model_base_path={root / MODEL}",
                                    f"--monitoring_config_file={monitoring}"])
    try:
        yield server.wait_serving()
    finally:
        server.stop()


def golden(tmp_path: Path, requests: list[dict[str, Any]] | str) -> str:
    path = tmp_path / "requests.json"
    path.write_text(requests if isinstance(requests, str) else json.dumps(requests))
    return str(path)


def runner(standin: StandIn, requests_file: str, **config: Any) -> PreflightRunner:
    config.setdefault("rest_port", standin.rest_port)
    return PreflightRunner(f"127.0.0.1:{standin.grpc_port}", MODEL, PreflightConfig(requests_file, **config))


async def test_golden_requests_that_come_back_right_pass_over_grpc(standin: StandIn, tmp_path: Path) -> None:
    requests = [
        {"instances": [[1.0, 2.0], [3.0, 4.0]], "predictions": [[2.5, 3.0], [3.5, 4.0]]},
        {"signature_name": "serving_default", "inputs": {"x": [10.0]}, "outputs": [7.0]},
        {"instances": [0.0]},  # no expectation: it must only succeed
    ]
    result = await runner(standin, golden(tmp_path, requests)).run(1)
    assert (result.passed, result.requests, result.transports) == (True, 3, (GRPC, GRPC, GRPC)), result.message
    assert result.message.startswith("3 pre-flight requests passed in ")
    assert result.message.endswith("(over gRPC)")


async def test_an_answer_far_from_the_expected_one_fails_naming_the_request_and_both_answers(
        standin: StandIn, tmp_path: Path) -> None:
    requests = [{"instances": [1.0]}, {"instances": [[1.0, 2.0]], "predictions": [[2.5, 9.0]]}]
    result = await runner(standin, golden(tmp_path, requests), tolerance=0.01).run(1)
    assert not result.passed
    assert result.message == ("request 2 of 2 returned a wrong answer: predictions[0][1] is 3.0, expected 9.0 "
                              "(tolerance 0.01); returned [[2.5, 3.0]], expected [[2.5, 9.0]]")
    # Within the tolerance, relative above 1: 3.0 against 3.02 is off by 0.66%.
    close = [{"instances": [[1.0, 2.0]], "predictions": [[2.5, 3.02]]}]
    assert (await runner(standin, golden(tmp_path, close), tolerance=0.01).run(1)).passed


async def test_tf_servings_own_errors_fail_the_pre_flight(standin: StandIn, tmp_path: Path) -> None:
    result = await runner(standin, golden(tmp_path, [{"signature_name": "other", "instances": [1.0]}])).run(1)
    assert result.message == ('request 1 of 1 names signature "other", which version 1 of model m does not have '
                              "(signatures: __saved_model_init_op, serving_default)")
    # A version TF Serving does not have: GetModelMetadata fails, so the REST API is asked, and
    # TF Serving's own words say why.
    result = await runner(standin, golden(tmp_path, [{"instances": [1.0]}])).run(7)
    assert not result.passed
    assert result.message == "request 1 of 1 failed: HTTP 404: Servable not found for request: Specific(m, 7)"


async def test_a_request_grpc_cannot_carry_goes_to_the_rest_api(standin: StandIn, tmp_path: Path) -> None:
    # Ragged instances cannot become one tensor here; TF Serving's REST API judges them itself.
    ragged = [{"instances": [[1.0], [2.0, 3.0]]}]
    result = await runner(standin, golden(tmp_path, ragged)).run(1)
    assert result.transports == (REST,)
    assert result.message.startswith("request 1 of 1 failed: HTTP 400: "), result.message
    without_rest = await runner(standin, golden(tmp_path, ragged), rest_port=0).run(1)
    assert without_rest.message.startswith("request 1 of 1 cannot be sent over gRPC (instances[1]: shape [2] "
                                           "differs from the first one's, [1]) and no REST port is known")


async def test_unusable_golden_requests_fail_with_the_reason(standin: StandIn, tmp_path: Path) -> None:
    result = await runner(standin, str(tmp_path / "missing.json")).run(1)
    assert result.message == f"the golden requests cannot be used: cannot read {tmp_path / 'missing.json'}: " \
                             "No such file or directory"
    result = await runner(standin, golden(tmp_path, '[{"instances": [1.0], "output": [2.5]}]')).run(1)
    assert result.message.startswith("the golden requests cannot be used: request 1: unknown key 'output'")


async def test_a_pre_flight_that_outlasts_its_timeout_fails(tmp_path: Path, standin: StandIn) -> None:
    write_version(tmp_path / "slow", 1, {"latency_seconds": 1.0})
    slow = StandIn(tmp_path / "run", ["--model_name=slow", f"--model_base_path={tmp_path / 'slow'}"]).wait_serving()
    try:
        config = PreflightConfig(golden(tmp_path, [{"instances": [1.0]}] * 3), timeout=1.5)
        result = await PreflightRunner(f"127.0.0.1:{slow.grpc_port}", "slow", config).run(1)
    finally:
        slow.stop()
    assert result.message == "the pre-flight did not finish within 1.5s: request 2 of 3 had no answer"


# ----------------------------------------------------------------------------- the bridge


async def _readiness(bridge: HealthBridge) -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="readiness"), timeout=2)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


async def _until(probe: Callable[[], Awaitable[Any]], expected: Any, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last == expected:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {expected!r}, last saw {last!r}")


def _bridge(standin: StandIn, requests_file: str, **config: Any) -> HealthBridge:
    return HealthBridge(BridgeConfig(
        target=f"127.0.0.1:{standin.grpc_port}", model=MODEL, version=1, port=0, http_port=0, listen="127.0.0.1",
        interval=0.05, timeout=0.5,
        preflight=PreflightConfig(requests_file, rest_port=standin.rest_port), **config))


async def test_the_bridge_reports_ready_only_after_the_pre_flight_passed(standin: StandIn, tmp_path: Path) -> None:
    bridge = _bridge(standin, golden(tmp_path, [{"instances": [1.0], "predictions": [2.5]}]))
    states: list[tuple[str, str]] = []  # (pre-flight state, readiness), as seen together
    await bridge.start()
    try:
        async def sampled() -> str:
            state = bridge.preflight.state if bridge.preflight else ""
            readiness = await _readiness(bridge)
            states.append((state, readiness))
            return state

        await _until(sampled, "Passed")
        await _until(lambda: _readiness(bridge), "SERVING")
        status = bridge.status()
        assert status.health.available
        assert status.preflight is not None and status.preflight.transports == (GRPC,)
        assert status.preflight.version == 1 and status.preflight.attempts == 1
    finally:
        await bridge.stop()
    # Readiness never said SERVING before the pre-flight had passed.
    assert all(readiness == "NOT_SERVING" for state, readiness in states if state != "Passed"), states


async def test_a_failed_pre_flight_keeps_the_pod_unready_and_says_why_in_its_status(
        standin: StandIn, tmp_path: Path) -> None:
    bridge = _bridge(standin, golden(tmp_path, [{"instances": [1.0], "predictions": [99.0]}]))
    await bridge.start()
    try:
        await _until(lambda: asyncio.sleep(0, bridge.preflight.state if bridge.preflight else ""), "Failed")
        assert await _readiness(bridge) == "NOT_SERVING"
        reported = parse_bridge_status(_render(bridge))
        assert reported.health.available  # the version is AVAILABLE: the pre-flight alone holds the pod
        assert reported.preflight is not None
        assert reported.preflight.error == ("request 1 of 1 returned a wrong answer: predictions[0] is 2.5, "
                                            "expected 99.0 (tolerance 1e-05); returned [2.5], expected [99.0]")
        # TF Serving restarting (its ports closed) sends the pod back to a new pre-flight,
        # keeping the last failure readable meanwhile.
        from tfleet.health.verdicts import ModelHealth

        await bridge.observe(ModelHealth(model=MODEL, expected_version=1, reachable=False, error="down", refused=True))
        assert bridge.preflight is not None
        assert (bridge.preflight.state, bridge.preflight.error) == ("Pending", reported.preflight.error)
    finally:
        await bridge.stop()


def _render(bridge: HealthBridge) -> str:
    from tfleet.health.verdicts import render_status_json

    return render_status_json(bridge.status())


async def test_the_bridge_counts_what_tf_serving_served_after_the_pre_flight(standin: StandIn, tmp_path: Path) -> None:
    from tfleet.health.traffic import figures_from_json

    bridge = _bridge(standin, golden(tmp_path, [{"instances": [1.0], "predictions": [2.5]}] * 3),
                     rest_port=standin.rest_port, metrics_path=METRICS, metrics_interval=0.2)
    await bridge.start()
    try:
        before = time.time()
        figures, extra = figures_from_json(await bridge.traffic_since(0))
        assert (figures.requests, extra["counting"]) == (0, False)  # not ready: nothing counted yet
        await _until(lambda: _readiness(bridge), "SERVING")
        for _ in range(4):
            await asyncio.to_thread(standin.predict, MODEL, [1.0, 2.0])
        await asyncio.to_thread(lambda: standin.http("POST", f"/v1/models/{MODEL}/versions/9:predict",
                                                     {"instances": [1.0]}))

        async def served() -> int:
            return figures_from_json(await bridge.traffic_since(before))[0].requests

        await _until(served, 5)  # read again at the bridge's metrics interval
        figures, extra = figures_from_json(await bridge.traffic_since(before))
    finally:
        await bridge.stop()
    # The three golden requests went before the baseline; the load's five came after it.
    assert (figures.requests, figures.errors, figures.by_status) == (5, 1, {"OK": 4, "NOT_FOUND": 1})
    assert sum(figures.latency_counts) == 4  # TF Serving times only what succeeded
    assert (extra["counting"], extra["model"], extra["version"], extra["error"]) == (True, MODEL, 1, "")
    assert figures.quantile(0.99) is not None
