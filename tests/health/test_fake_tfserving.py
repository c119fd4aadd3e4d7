"""The fake TF Serving itself: Predict, GetModelStatus semantics, scripts, process mode."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from tests.fakes.tfserving import EventError, FakeTFServing
from tests.fakes.tfserving import protos as fp
from tests.fakes.tfserving.script import load_script
from tests.fakes.tfserving.server import check_event
from tfleet.health.tfs import fetch_once

from .conftest import MODEL


def predict(fake: FakeTFServing, tensor: object, version: int | None = None) -> object:
    request = fp.PredictRequest()
    request.model_spec.name = MODEL
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["x"].CopyFrom(tensor)
    with grpc.insecure_channel(fake.target) as channel:
        call = channel.unary_unary(
            f"/{fp.PREDICTION_SERVICE}/Predict",
            request_serializer=fp.PredictRequest.SerializeToString,
            response_deserializer=fp.PredictResponse.FromString,
        )
        return call(request, timeout=2)


def test_predict_halves_and_adds_two(fake: FakeTFServing) -> None:
    fake.set_version(1, "AVAILABLE")
    response = predict(fake, fp.float_tensor([1.0, 2.0, 5.0, 10.0], shape=[4, 1]))
    y = response.outputs["y"]  # type: ignore[attr-defined]
    assert list(y.float_val) == [2.5, 3.0, 4.5, 7.0]
    assert [d.size for d in y.tensor_shape.dim] == [4, 1]
    assert response.model_spec.version.value == 1  # type: ignore[attr-defined]


def test_predict_reads_tensor_content(fake: FakeTFServing) -> None:
    fake.set_version(1, "AVAILABLE")
    tensor = fp.TensorProto(dtype=fp.DT_FLOAT, tensor_content=struct.pack("<2f", 0.0, -4.0))
    tensor.tensor_shape.dim.add(size=2)
    assert list(predict(fake, tensor).outputs["y"].float_val) == [2.0, 0.0]  # type: ignore[attr-defined]


def test_predict_needs_an_available_version(fake: FakeTFServing) -> None:
    fake.set_version(1, "LOADING")
    with pytest.raises(grpc.RpcError) as info:
        predict(fake, fp.float_tensor([1.0]))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert info.value.details() == f"Servable not found for request: Latest({MODEL})"  # type: ignore[attr-defined]


def test_predict_rejects_other_dtypes(fake: FakeTFServing) -> None:
    fake.set_version(1, "AVAILABLE")
    with pytest.raises(grpc.RpcError) as info:
        predict(fake, fp.TensorProto(dtype=3))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


def test_status_for_a_named_version_follows_tf_serving(fake: FakeTFServing) -> None:
    from tfleet.health import protos

    fake.set_version(1, "AVAILABLE")
    with grpc.insecure_channel(fake.target) as channel:
        call = channel.unary_unary(
            protos.GET_MODEL_STATUS_METHOD,
            request_serializer=protos.GetModelStatusRequest.SerializeToString,
            response_deserializer=protos.GetModelStatusResponse.FromString,
        )
        request = protos.GetModelStatusRequest()
        request.model_spec.name = MODEL
        request.model_spec.version.value = 2
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=2)
        assert info.value.details() == f"Could not find version 2 of model {MODEL}"  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as info:
            call(protos.GetModelStatusRequest(), timeout=2)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


def test_load_moves_through_start_loading_available(fake: FakeTFServing) -> None:
    fake.load(4, seconds=0.4).join(timeout=5)
    seen = fetch_once(fake.target, MODEL, 4, timeout=1)
    assert [(v.version, v.state) for v in seen.versions] == [(4, "AVAILABLE")]
    fake.load(5, seconds=0.1, error="Out of memory").join(timeout=5)
    assert fetch_once(fake.target, MODEL, 5, timeout=1).load_error == "Out of memory"


@pytest.mark.parametrize(
    "event",
    [{"state": "AVAILABLE"}, {"version": 1, "state": "READY"}, {"colour": "red"},
     {"version": 1, "state": "END", "errorCode": "OOPS"}],
)  # fmt: skip
def test_bad_events_are_refused(fake: FakeTFServing, event: dict[str, object]) -> None:
    with pytest.raises(EventError):
        fake.apply(event)
    with pytest.raises(EventError):
        fake.timeline([{"at": 0, **event}])


def _start(args: list[str]) -> tuple[subprocess.Popen[str], dict[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.tfserving", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    ports = dict(item.split("=") for item in line.split())
    return proc, {k: int(v) for k, v in ports.items()}


def test_runs_as_a_process_with_a_script_and_a_control_endpoint(tmp_path: Path) -> None:
    script = tmp_path / "script.yaml"
    script.write_text(
        "model: resnet\n"
        "events:\n"
        "  - {at: 0, version: 1, state: LOADING}\n"
        "  - {at: 0.3, version: 1, state: AVAILABLE}\n"
    )
    proc, ports = _start(["--port", "0", "--control-port", "0", "--script", str(script)])
    try:
        target = f"127.0.0.1:{ports['port']}"
        deadline = time.monotonic() + 5
        while not fetch_once(target, "resnet", 1, timeout=1).available:
            assert time.monotonic() < deadline, "the script never made version 1 AVAILABLE"
            time.sleep(0.05)

        control = f"http://127.0.0.1:{ports['control_port']}"
        body = json.dumps([{"version": 2, "state": "END", "error": "bad model"}]).encode()
        request = urllib.request.Request(f"{control}/events", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            state = json.load(response)
        assert state["versions"][0] == {
            "version": 2, "state": "END", "errorCode": "UNKNOWN", "errorMessage": "bad model",
        }  # fmt: skip
        assert fetch_once(target, "resnet", 2, timeout=1).load_error == "bad model"

        bad = urllib.request.Request(f"{control}/events", data=b'{"nope": 1}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(bad, timeout=5)
        assert info.value.code == 400
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_a_bad_script_is_refused(tmp_path: Path) -> None:
    script = tmp_path / "script.yaml"
    script.write_text("- {at: 0, version: 1, state: READY}\n")
    result = subprocess.run(
        [sys.executable, "-m", "tests.fakes.tfserving", "--port", "0", "--script", str(script)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "unknown state 'READY'" in result.stderr


SCRIPTS = sorted((Path(__file__).parents[2] / "tests" / "fakes" / "tfserving" / "scripts").glob("*.yaml"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_the_shipped_scripts_are_valid(script: Path) -> None:
    model, events = load_script(str(script))
    assert model == MODEL
    assert events
    for event in events:
        check_event(event)
