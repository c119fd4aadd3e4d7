"""The TF Serving stand-in as a process: start-up, versions, both APIs, metrics, signals."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from e2e.standin import image, protos
from e2e.standin.models import write_version

from .standin_support import PYTHONPATH, StandIn, free_port, metric_value, port_open, wait_until

LINEAR = {"function": {"linear": {"a": 0.5, "b": 2}}}
FAST_RETRIES = ["--load_retry_interval_micros=50000"]
Launch = Callable[..., StandIn]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    started: list[StandIn] = []

    def start(*args: str, env: dict[str, str] | None = None) -> StandIn:
        s = StandIn(tmp_path / "run", list(args), env)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def grpc_error(fn: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


# ----- the command line -----------------------------------------------------------------


def test_a_bad_flag_value_prints_the_usage_and_exits_255(launch: Launch) -> None:
    s = launch("--rest_api_timeout_in_ms=ten", "--model_base_path=/nonexistent")
    assert s.wait_exit() == 255
    assert s.stdout.startswith("usage: tensorflow_model_server\nFlags:\n")
    assert "\t--port=8500                      \tint32\t" in s.stdout
    assert "Couldn't interpret value ten for flag rest_api_timeout_in_ms." in s.stderr
    assert not port_open(s.grpc_port)


@pytest.mark.parametrize("flag", ["--enable_batching=maybe", "--help"])
def test_bad_booleans_and_help_are_refused(launch: Launch, flag: str) -> None:
    s = launch(flag, "--model_base_path=/nonexistent")
    assert s.wait_exit() == 255
    assert "usage: tensorflow_model_server" in s.stdout


def test_version_prints_and_exits_0(launch: Launch) -> None:
    s = launch("--version")
    assert s.wait_exit() == 0
    assert s.stdout.startswith("TensorFlow ModelServer: 2.19.0")
    assert "TensorFlow Library: 2.19.0" in s.stdout


def test_unknown_arguments_are_reported_but_the_server_starts(launch: Launch, tmp_path: Path) -> None:
    """main.cc prints "unknown argument" and goes on; `--flag value` is not understood."""
    write_version(tmp_path / "m", 1, LINEAR)
    rest = free_port()
    s = launch("--model_name=m", f"--model_base_path={tmp_path / 'm'}", "--rest_api_port=0",
               "--no_such_flag=1", "--rest_api_port", str(rest))
    s.wait_serving()
    assert s.stdout.startswith("unknown argument: --no_such_flag=1\nusage: tensorflow_model_server\n")
    assert s.status("m") == {1: ("AVAILABLE", 0, "")}
    assert not port_open(rest)  # "--rest_api_port 1234" set nothing


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--port=0"], "INVALID_ARGUMENT: At least one of server_options.grpc_port or "
         "server_options.grpc_socket_path must be set."),
        ([], "INVALID_ARGUMENT: Both server_options.model_base_path and server_options.model_config_file are empty!"),
        (["--model_base_path=/m", "--batching_parameters_file=/b"],
         "INVALID_ARGUMENT: server_options.batching_parameters_file is set without setting "
         "server_options.enable_batching to true."),
        (["--model_config_file=/nonexistent/models.config"],
         "NOT_FOUND: /nonexistent/models.config; No such file or directory"),
    ],
)
def test_start_up_errors_are_printed_as_the_real_server_does(launch: Launch, args: list[str], error: str) -> None:
    s = launch(*args)
    assert s.wait_exit() == 255
    assert s.stdout == f"Failed to start server. Error: {error}\n"


def test_a_config_file_that_does_not_parse_fails_start_up(launch: Launch, tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: 'm' colour: 'red' } }")
    s = launch(f"--model_config_file={config}")
    assert s.wait_exit() == 255
    assert s.stdout == f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{config}'\n"
    assert (
        'Error parsing text-format tensorflow.serving.ModelServerConfig: 1:40: Message type '
        '"tensorflow.serving.ModelConfig" has no field named "colour".'
    ) in s.stderr


def test_the_config_file_wins_over_model_name(launch: Launch, tmp_path: Path) -> None:
    write_version(tmp_path / "a", 1, LINEAR)
    config = tmp_path / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "from_file" base_path: "{tmp_path / "a"}" model_platform: "tensorflow" }} }}'
    )
    s = launch(f"--model_config_file={config}", "--model_name=from_flag", f"--model_base_path={tmp_path / 'a'}")
    s.wait_serving()
    assert s.status("from_file") == {1: ("AVAILABLE", 0, "")}
    error = grpc_error(lambda: s.status("from_flag"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Could not find any versions of model from_flag"


# ----- start-up -------------------------------------------------------------------------


def test_ports_open_only_after_the_first_load(launch: Launch, tmp_path: Path) -> None:
    write_version(tmp_path / "m", 1, {**LINEAR, "load_seconds": 2})
    s = launch("--model_name=m", f"--model_base_path={tmp_path / 'm'}")
    refused = 0
    while not port_open(s.grpc_port):
        refused += 1
        assert s.proc.poll() is None, s.stderr
        time.sleep(0.05)
    log_when_open = s.stderr  # read after the port opened: the load must be logged already
    assert refused > 1
    assert "Successfully loaded servable version {name: m version: 1}" in log_when_open
    s.wait_log("Running gRPC ModelServer at 0.0.0.0:")
    log = s.stderr
    assert log.index("Successfully loaded servable version") < log.index("Running gRPC ModelServer at 0.0.0.0:")
    assert s.status("m") == {1: ("AVAILABLE", 0, "")}


def test_a_failed_first_load_is_retried_then_the_server_exits(launch: Launch, tmp_path: Path) -> None:
    write_version(tmp_path / "m", 3, LINEAR, saved_model=False)
    s = launch("--model_name=m", f"--model_base_path={tmp_path / 'm'}", "--max_num_load_retries=2", *FAST_RETRIES)
    assert s.wait_exit() == 255
    path = tmp_path / "m" / "3"
    assert s.stdout == (
        "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: "
        "{{{name: m version: 3} due to error: NOT_FOUND: Could not find SavedModel .pb or .pbtxt at supplied "
        f"export directory path: {path}. Check that the directory exists and that you have the right "
        "permissions for accessing it.}, }\n"
    )
    log = s.stderr
    assert log.count("Loading servable: {name: m version: 3} failed: NOT_FOUND: Could not find SavedModel") == 3
    assert "Retrying of Loading servable: {name: m version: 3} retry: 2" in log
    assert "Retrying of Loading servable: {name: m version: 3} exhausted max_num_retries: 2" in log
    assert "Running gRPC ModelServer" not in log


def test_a_load_that_fails_twice_then_succeeds_within_the_retries(launch: Launch, tmp_path: Path) -> None:
    write_version(tmp_path / "m", 1, {**LINEAR, "load_error": {"code": "UNAVAILABLE", "message": "GCS hiccup"},
                                      "load_error_attempts": 2})
    s = launch("--model_name=m", f"--model_base_path={tmp_path / 'm'}", "--max_num_load_retries=2", *FAST_RETRIES)
    s.wait_serving()
    assert s.status("m") == {1: ("AVAILABLE", 0, "")}
    assert s.stderr.count("Loading servable: {name: m version: 1} failed: UNAVAILABLE: GCS hiccup") == 2


def test_labels_on_unavailable_versions_fail_start_up_unless_allowed(launch: Launch, tmp_path: Path) -> None:
    write_version(tmp_path / "m", 1, LINEAR)
    config = tmp_path / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "m" base_path: "{tmp_path / "m"}" model_platform: "tensorflow" '
        'version_labels { key: "stable" value: 1 } } }'
    )
    s = launch(f"--model_config_file={config}")
    assert s.wait_exit() == 255
    assert s.stdout == (
        "Failed to start server. Error: FAILED_PRECONDITION: Request to assign label to version 1 of model m, "
        "which is not currently available for inference\n"
    )


def test_an_unreachable_cloud_file_system_keeps_the_server_starting(launch: Launch, tmp_path: Path) -> None:
    s = launch("--model_name=m", "--model_base_path=gs://bucket/m", env={"TFSERVING_STANDIN_STORAGE_ROOT": ""})
    s.wait_log("FileSystemStoragePathSource encountered a filesystem access error: Could not find base path "
               "gs://bucket/m for servable m with error UNAVAILABLE: Error executing an HTTP request", count=2)
    assert s.proc.poll() is None
    assert not port_open(s.grpc_port)


# ----- versions while serving -------------------------------------------------------------


def test_new_versions_load_before_the_old_one_unloads_and_bad_ones_end(launch: Launch, tmp_path: Path) -> None:
    base = tmp_path / "m"
    write_version(base, 1, LINEAR)
    s = launch("--model_name=m", f"--model_base_path={base}", "--max_num_load_retries=0").wait_serving()

    seen: list[dict[int, tuple[str, int, str]]] = []
    rest_while_loading: list[tuple[int, str]] = []

    def observe_until(done: Callable[[dict[int, tuple[str, int, str]]], bool]) -> None:
        def step() -> bool:
            states = s.status("m")
            seen.append(states)
            if any(st == "LOADING" for st, _, _ in states.values()):
                code, _, body = s.http("GET", "/v1/models/m")
                rest_while_loading.append((code, body))
            assert any(st == "AVAILABLE" for st, _, _ in states.values()), f"no version available: {states}"
            return done(states)

        wait_until(step, "the expected model states", interval=0.03)

    # A bad version: LOADING, then END with the loader's error; version 1 keeps serving.
    write_version(base, 2, {**LINEAR, "load_seconds": 1, "load_error": {"code": "INVALID_ARGUMENT",
                                                                          "message": "Op type not registered 'Foo'"}})
    observe_until(lambda st: st.get(2, ("",))[0] == "END")
    assert any(st.get(2, ("",))[0] == "LOADING" for st in seen)
    # The real REST status answers 200 while a version loads, and after it ended.
    assert any(code == 200 and '"state": "LOADING"' in body for code, body in rest_while_loading)
    assert s.status("m")[2] == ("END", 3, "Op type not registered 'Foo'")
    assert s.predict("m", [2.0]).model_spec.version.value == 1
    code, _, body = s.http("GET", "/v1/models/m/versions/2")
    assert code == 200  # the real REST status answers 200 after END too
    assert json.loads(body)["model_version_status"][0]["state"] == "END"

    # A good one: loads while 1 is still AVAILABLE, then 1 is unloaded.
    seen.clear()
    write_version(base, 3, {**LINEAR, "load_seconds": 1})
    observe_until(lambda st: st.get(3, ("",))[0] == "AVAILABLE" and st[1][0] == "END")
    assert any(st.get(3, ("",))[0] == "LOADING" and st[1][0] == "AVAILABLE" for st in seen)
    assert s.predict("m", [2.0]).model_spec.version.value == 3
    error = grpc_error(lambda: s.predict("m", [2.0], version=1))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Specific(m, 1)"


def test_version_policy_labels_and_config_reloads(launch: Launch, tmp_path: Path) -> None:
    root = tmp_path / "store"
    for v in (1, 2, 3):
        write_version("gs://models/m", v, {"function": {"linear": {"a": v, "b": 0}}}, storage_root=root)
    config = tmp_path / "models.config"

    def write_config(versions: list[int], labels: dict[str, int]) -> None:
        specific = " ".join(f"versions: {v}" for v in versions)
        label_text = " ".join(f'version_labels {{ key: "{k}" value: {v} }}' for k, v in labels.items())
        config.write_text(
            f'model_config_list {{ config {{ name: "m" base_path: "gs://models/m" model_platform: "tensorflow" '
            f"model_version_policy {{ specific {{ {specific} }} }} {label_text} }} }}"
        )

    write_config([1, 3], {"stable": 1, "canary": 3})
    s = launch(f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1",
               "--allow_version_labels_for_unavailable_models", env={"TFSERVING_STANDIN_STORAGE_ROOT": str(root)})
    s.wait_serving()
    # Start-up waits for Latest(m) only: version 1 may still be loading when the ports open.
    wait_until(lambda: {v: st[0] for v, st in s.status("m").items()} == {1: "AVAILABLE", 3: "AVAILABLE"},
               "versions 1 and 3")
    assert list(s.predict("m", [2.0], label="canary").outputs["y"].float_val) == [6.0]
    assert list(s.predict("m", [2.0], label="stable").outputs["y"].float_val) == [2.0]
    code, _, body = s.http("POST", "/v1/models/m/labels/canary:predict", {"instances": [1.0]})
    assert (code, json.loads(body)) == (200, {"predictions": [3.0]})
    error = grpc_error(lambda: s.predict("m", [2.0], label="nope"))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                               "Unrecognized servable version label: nope")

    # The config file is read again. Moving a label to a version that is not loaded yet is
    # refused (and the refused config sticks), so it takes two steps, as with TF Serving.
    write_config([2, 3], {"stable": 2, "canary": 3})
    s.wait_log("PollFilesystemAndReloadConfig failed to ReloadConfig: Request to assign label to version 2 "
               "of model m, which is not currently available for inference")
    assert 2 not in s.status("m")
    write_config([1, 2, 3], {"stable": 1, "canary": 3})
    wait_until(lambda: s.status("m").get(2, ("",))[0] == "AVAILABLE", "version 2")
    write_config([2, 3], {"stable": 2, "canary": 3})
    wait_until(lambda: {v: st[0] for v, st in s.status("m").items()} == {1: "END", 2: "AVAILABLE", 3: "AVAILABLE"},
               "version 1 to leave")
    assert s.predict("m", [2.0], label="stable").model_spec.version.value == 2


def test_reload_config_over_grpc_adds_models_and_reports_their_failure(launch: Launch, tmp_path: Path) -> None:
    write_version(tmp_path / "a", 1, LINEAR)
    write_version(tmp_path / "b", 1, LINEAR)
    write_version(tmp_path / "bad", 1, LINEAR, saved_model=False)
    s = launch("--model_name=a", f"--model_base_path={tmp_path / 'a'}", "--max_num_load_retries=0").wait_serving()

    def reload(*names: str) -> protos.ReloadConfigResponse:
        request = protos.ReloadConfigRequest(metric_names=["/tensorflow/serving/request_count"])
        for name in names:
            request.config.model_config_list.config.add(
                name=name, base_path=str(tmp_path / name), model_platform="tensorflow"
            )
        return s.call(protos.MODEL_SERVICE, "HandleReloadConfigRequest", request, protos.ReloadConfigResponse)

    response = reload("a", "b")
    assert response.status.error_code == 0
    assert [(m.name, m.int64_value_increase) for m in response.metric] == [("/tensorflow/serving/request_count", 0)]
    assert s.status("b") == {1: ("AVAILABLE", 0, "")}
    error = grpc_error(lambda: reload("a", "b", "bad"))
    assert error.code() == grpc.StatusCode.UNKNOWN
    assert error.details().startswith(
        "1 model(s) did not become available: {{{name: bad version: 1} due to error: NOT_FOUND: Could not find "
        "SavedModel .pb or .pbtxt"
    )
    assert error.details().endswith("}, }")
    reload("b")
    wait_until(lambda: s.status("a")[1][0] == "END", "model a to be unloaded once it left the config")


# ----- the APIs -------------------------------------------------------------------------


@pytest.fixture
def linear(launch: Launch, tmp_path: Path) -> StandIn:
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }')
    write_version(tmp_path / "m", 1, LINEAR)
    return launch("--model_name=m", f"--model_base_path={tmp_path / 'm'}",
                  f"--monitoring_config_file={monitoring}").wait_serving()


def test_predict_over_grpc(linear: StandIn) -> None:
    response = linear.predict("m", [1.0, 2.0, 5.0, 10.0], [4, 1])
    y = response.outputs["y"]
    assert list(y.float_val) == [2.5, 3.0, 4.5, 7.0]
    assert [d.size for d in y.tensor_shape.dim] == [4, 1]
    assert (response.model_spec.name, response.model_spec.version.value, response.model_spec.signature_name) == (
        "m", 1, "serving_default")
    for fn, code, details in [
        (lambda: linear.predict("m", [1.0], version=9), grpc.StatusCode.NOT_FOUND,
         "Servable not found for request: Specific(m, 9)"),
        (lambda: linear.predict("nope", [1.0]), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
    ]:
        error = grpc_error(fn)
        assert (error.code(), error.details()) == (code, details)
    request = protos.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(protos.TensorProto(dtype=protos.DATA_TYPES["DT_DOUBLE"], double_val=[1.0]))
    request.inputs["x"].tensor_shape.dim.add(size=1)
    error = grpc_error(lambda: linear.call(protos.PREDICTION_SERVICE, "Predict", request, protos.PredictResponse))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                               "Expects arg[0] to be float but double is provided")


def test_predict_over_rest_in_both_forms(linear: StandIn) -> None:
    code, kind, body = linear.http("POST", "/v1/models/m:predict", {"instances": [1.0, 2.0, 5.0]})
    assert (code, kind) == (200, "application/json")
    assert body == '{\n    "predictions": [2.5, 3.0, 4.5\n    ]\n}'
    code, _, body = linear.http("POST", "/v1/models/m/versions/1:predict", {"inputs": [[1.0, 2.0], [3.0, 4.0]]})
    assert code == 200
    assert json.loads(body) == {"outputs": [[2.5, 3.0], [3.5, 4.0]]}
    assert body.startswith('{\n    "outputs": [\n        [\n            2.5,')
    code, _, body = linear.http("POST", "/v1/models/m/versions/7:predict", {"instances": [1.0]})
    assert (code, body) == (404, '{\n    "error": "Servable not found for request: Specific(m, 7)"\n}')
    code, _, body = linear.http("POST", "/v1/models/m:predict", {"instances": ["a"]})
    assert code == 400
    assert json.loads(body)["error"] == (
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: \"a\" Type: String "
        "is not of expected type: float"
    )
    code, _, body = linear.http("POST", "/v1/models/m:predict", "")
    assert (code, json.loads(body)) == (400, {"error": "JSON Parse error: The document is empty"})
    code, _, body = linear.http("PUT", "/v1/models/m", "")
    assert (code, json.loads(body)) == (400, {"error": "Malformed request: PUT /v1/models/m"})
    code, kind, _ = linear.http("GET", "/v2/models/m")
    assert (code, kind) == (404, "text/html")


def test_model_status_and_metadata(linear: StandIn) -> None:
    code, _, body = linear.http("GET", "/v1/models/m")
    assert code == 200
    assert json.loads(body) == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    code, _, body = linear.http("GET", "/v1/models/m/metadata")
    assert code == 200
    metadata = json.loads(body)
    assert metadata["model_spec"] == {"name": "m", "signature_name": "", "version": "1"}
    serving = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert serving["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert serving["method_name"] == "tensorflow/serving/predict"
    request = protos.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "m"
    response = linear.call(protos.PREDICTION_SERVICE, "GetModelMetadata", request, protos.GetModelMetadataResponse)
    packed = response.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signatures = protos.SignatureDefMap.FromString(packed.value)
    assert signatures.signature_def["serving_default"].outputs["y"].name == "StatefulPartitionedCall:0"
    assert response.model_spec.version.value == 1


def test_metrics_count_requests_by_status(linear: StandIn) -> None:
    for _ in range(3):
        linear.predict("m", [1.0])
    grpc_error(lambda: linear.predict("m", [1.0], version=5))
    linear.http("POST", "/v1/models/m:predict", {"instances": [1.0]})
    page = linear.metrics("/metrics")
    assert metric_value(page, ':tensorflow:serving:request_count{model_name="m",status="OK"}') == 4
    assert metric_value(page, ':tensorflow:serving:request_count{model_name="m",status="NOT_FOUND"}') == 1
    assert metric_value(
        page, ':tensorflow:serving:request_latency_count{model_name="m",API="Predict",entrypoint="GRPC"}') == 3
    assert metric_value(
        page, ':tensorflow:serving:request_latency_bucket{model_name="m",API="predict",entrypoint="REST",le="+Inf"}'
    ) == 1
    assert "# TYPE :tensorflow:serving:request_latency histogram" in page
    assert metric_value(page, f':tensorflow:cc:saved_model:load_attempt_count{{model_path="{linear.args[-2].split("=")[1]}/1",status="success"}}') == 1
    assert linear.http("GET", "/monitoring/prometheus/metrics")[0] == 404


def test_batching_merges_concurrent_requests(launch: Launch, tmp_path: Path) -> None:
    write_version(tmp_path / "m", 1, {**LINEAR, "latency_seconds": 0.05})
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 8 } batch_timeout_micros { value: 500000 } "
                      "num_batch_threads { value: 1 } max_enqueued_batches { value: 100 }")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    s = launch("--model_name=m", f"--model_base_path={tmp_path / 'm'}", "--enable_batching",
               f"--batching_parameters_file={params}", f"--monitoring_config_file={monitoring}").wait_serving()
    barrier = threading.Barrier(6)

    def one(i: int) -> list[float]:
        barrier.wait()
        return list(s.predict("m", [float(i)]).outputs["y"].float_val)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, range(6)))
    assert results == [[0.5 * i + 2] for i in range(6)]
    page = s.metrics()
    batches = metric_value(page, ":tensorflow:serving:batching_session:processed_batch_size_count{}")
    assert metric_value(page, ":tensorflow:serving:batching_session:processed_batch_size_sum{}") == 6
    assert 1 <= batches < 6
    assert metric_value(page, ":tensorflow:serving:batching_session:wrapped_run_count{}") == batches
    assert metric_value(page, ':tensorflow:serving:batching_session:queuing_latency_count{thread_pool_name="batch_threads"}') == 6
    error = grpc_error(lambda: s.predict("m", [1.0] * 9))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                               "Task size 9 is larger than maximum input batch size 8")


def test_a_hanging_version_wedges_every_api(launch: Launch, tmp_path: Path) -> None:
    write_version(tmp_path / "m", 1, {**LINEAR, "hang_after_seconds": 0.5})
    s = launch("--model_name=m", f"--model_base_path={tmp_path / 'm'}").wait_serving()

    def wedged() -> bool:
        try:
            s.status("m", timeout=0.3)
            return False
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            return True

    wait_until(wedged, "the server to stop answering")
    with pytest.raises(OSError):
        s.http("GET", "/v1/models/m", timeout=0.5)
    assert s.proc.poll() is None and port_open(s.grpc_port)


def test_max_connection_age_makes_clients_reconnect(launch: Launch, tmp_path: Path) -> None:
    write_version(tmp_path / "m", 1, LINEAR)
    s = launch("--model_name=m", f"--model_base_path={tmp_path / 'm'}", "--rest_api_port=0",
               "--grpc_channel_arguments=grpc.max_connection_age_ms=300,grpc.max_connection_age_grace_ms=100")
    s.wait_serving()
    hex_port = f"{s.grpc_port:04X}"
    client_ports: set[str] = set()

    def reconnected() -> bool:
        s.predict("m", [1.0])  # one channel throughout: every call must succeed
        # gRPC's wildcard listener is dual-stack: connections may show as IPv4-mapped IPv6.
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                local, remote, state = line.split()[1:4]
                if remote.endswith(f":{hex_port}") and state == "01":
                    client_ports.add(local)
        return len(client_ports) >= 2

    wait_until(reconnected, "a second connection after GOAWAY", timeout=20, interval=0.05)


# ----- the image's entrypoint under a PID namespace -----------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _nspid(pid: int) -> int:
    """The process's PID in its own (innermost) PID namespace."""
    line = next(li for li in Path(f"/proc/{pid}/status").read_text().splitlines() if li.startswith("NSpid:"))
    return int(line.split()[-1])


def test_the_entrypoint_as_pid_1_ignores_sigterm_but_the_server_does_not(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    files = image.image_files(sys.executable, PYTHONPATH)
    for path, (content, mode) in files.items():
        target = bin_dir / Path(path).name
        target.write_text(content)
        target.chmod(mode)
    write_version(tmp_path / "models" / "m", 1, LINEAR)
    grpc_port, rest_port = free_port(), free_port()
    env = {**os.environ, **image.ENV, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "MODEL_NAME": "m", "MODEL_BASE_PATH": str(tmp_path / "models")}
    log = open(tmp_path / "log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", str(bin_dir / "tf_serving_entrypoint.sh"),
         f"--port={grpc_port}", f"--rest_api_port={rest_port}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_until(lambda: port_open(grpc_port) and port_open(rest_port), "the server in the namespace")
        [init] = wait_until(lambda: _children(proc.pid), "the namespace's PID 1")
        [server] = _children(init)
        assert "/bin/bash" in Path(f"/proc/{init}/cmdline").read_text()
        assert "e2e.standin" in Path(f"/proc/{server}/cmdline").read_text()
        assert _nspid(init) == 1 and _nspid(server) == 2

        os.kill(init, signal.SIGTERM)
        time.sleep(0.3)
        assert proc.poll() is None and port_open(grpc_port)
        assert Path(f"/proc/{init}/stat").read_text().split(")")[1].split()[0] != "Z"

        os.kill(server, signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
