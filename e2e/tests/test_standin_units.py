"""The stand-in's pure parts: flag parsing, version selection, JSON and metrics text, cards."""

from __future__ import annotations

import pytest

from e2e.standin import flags, image, jsonout, metrics, storage
from e2e.standin.manager import END, ServableState, unavailable_message
from e2e.standin.models import CardError, parse_card
from e2e.standin.server import grpc_channel_arguments
from e2e.standin.source import ServableToMonitor, parse_version, select_versions
from e2e.standin.status import Status, StatusError

# ----- flags -------------------------------------------------------------------------------


def test_flags_take_name_equals_value_and_the_last_one_wins() -> None:
    parsed = flags.parse(["--port=8500", "--rest_api_port=8501", "--port=9000", "--model_name=m"])
    assert parsed.ok and not parsed.unknown
    assert (parsed.port, parsed.rest_api_port, parsed.model_name) == (9000, 8501, "m")


def test_a_separate_value_is_not_understood() -> None:
    parsed = flags.parse(["--port", "9000"])
    assert parsed.ok
    assert parsed.unknown == ["--port", "9000"]
    assert parsed.port == 8500


@pytest.mark.parametrize(
    ("arg", "value"),
    [("--enable_batching", True), ("--enable_batching=true", True), ("--enable_batching=TRUE", True),
     ("--enable_batching=1", True), ("--enable_batching=false", False), ("--enable_batching=0", False)],
)
def test_booleans_as_tf_parses_them(arg: str, value: bool) -> None:
    parsed = flags.parse([arg])
    assert parsed.ok and parsed.enable_batching is value


@pytest.mark.parametrize("arg", ["--enable_batching=yes", "--port=12x", "--port=", "--load_retry_interval_micros=1.5",
                                 "--per_process_gpu_memory_fraction=half"])
def test_bad_values_fail_the_parse(arg: str) -> None:
    parsed = flags.parse([arg])
    assert not parsed.ok
    assert parsed.errors == [f"Couldn't interpret value {arg.partition('=')[2]} for flag {arg[2:].partition('=')[0]}."]


def test_numbers_as_sscanf_reads_them() -> None:
    parsed = flags.parse(["--port= +42", "--per_process_gpu_memory_fraction=0.5", "--load_retry_interval_micros=-1"])
    assert parsed.ok
    assert (parsed.port, parsed.per_process_gpu_memory_fraction, parsed.load_retry_interval_micros) == (42, 0.5, -1)
    assert flags.parse(["--port=4294967297"]).port == 1  # stored in an int: it wraps


def test_flags_that_start_like_others_are_unknown() -> None:
    assert flags.parse(["--enable_batchingx"]).unknown == ["--enable_batchingx"]
    assert flags.parse(["--", "--port=1"]).unknown == ["--", "--port=1"]
    assert not flags.parse(["--help"]).ok


def test_every_flag_of_main_cc_is_declared() -> None:
    for name in ("port", "grpc_socket_path", "rest_api_port", "rest_api_num_threads", "rest_api_timeout_in_ms",
                 "model_name", "model_base_path", "model_config_file", "model_config_file_poll_wait_seconds",
                 "file_system_poll_wait_seconds", "enable_batching", "batching_parameters_file",
                 "monitoring_config_file", "grpc_channel_arguments", "max_num_load_retries",
                 "load_retry_interval_micros", "tensorflow_session_parallelism", "enable_model_warmup", "version",
                 "allow_version_labels_for_unavailable_models", "enable_grpc_healthcheck_service"):
        assert name in flags.FLAG_NAMES
    assert len(flags.SPECS) == len(flags.FLAG_NAMES) == 48  # main.cc declares 48 flags


def test_grpc_channel_arguments_pass_int32_values_as_ints() -> None:
    assert grpc_channel_arguments("grpc.max_connection_age_ms=30000,grpc.primary_user_agent=x,a=99999999999") == [
        ("grpc.max_connection_age_ms", 30000), ("grpc.primary_user_agent", "x"), ("a", "99999999999")]
    assert grpc_channel_arguments("") == []


# ----- versions ------------------------------------------------------------------------------


def servable(policy: str, num_versions: int = 0, versions: tuple[int, ...] = ()) -> ServableToMonitor:
    return ServableToMonitor("m", "/models/m", policy, num_versions, versions)


CHILDREN = ["1", "2", "0003", "abc", "10", ".5.tmp", "saved_model.pb"]


def test_latest_keeps_the_highest_versions_at_least_one() -> None:
    assert select_versions(servable("latest"), CHILDREN)[0] == [(10, "10")]
    assert select_versions(servable("latest", 2), CHILDREN)[0] == [(10, "10"), (3, "0003")]


def test_all_and_specific() -> None:
    assert [v for v, _ in select_versions(servable("all"), CHILDREN)[0]] == [1, 2, 3, 10]
    aspired, warnings = select_versions(servable("specific", versions=(2, 7)), CHILDREN)
    assert aspired == [(2, "2")]
    assert "Version 7 of servable m, which was requested to be served as a 'specific' version" in warnings[0]


def test_no_versions_warns_as_tf_serving_does() -> None:
    aspired, warnings = select_versions(servable("latest"), ["abc"])
    assert aspired == []
    assert warnings == ["No versions of servable m found under base path /models/m. Did you forget to name your "
                        "leaf directory as a number (eg. '/1/')?"]


def test_version_names_parse_as_simple_atoi() -> None:
    assert [parse_version(c) for c in ["7", "007", "+7", "-1", "1_0", "1.0", "x", ""]] == [7, 7, 7, -1, None, None,
                                                                                          None, None]


def test_the_unavailable_message_format() -> None:
    states = [ServableState("m", 3, END, Status("NOT_FOUND", "gone"))]
    assert unavailable_message("servable(s)", states) == (
        "1 servable(s) did not become available: {{{name: m version: 3} due to error: NOT_FOUND: gone}, }")


# ----- storage ---------------------------------------------------------------------------------


def test_cloud_paths_map_under_the_storage_root(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv(storage.STORAGE_ROOT_ENV, str(tmp_path))
    assert storage.local_path("s3://bucket/a/b") == f"{tmp_path}/s3/bucket/a/b"
    assert storage.local_path("/models/m") == "/models/m"
    assert storage.file_exists("gs://bucket/m") == Status("NOT_FOUND", "gs://bucket/m not found")
    with pytest.raises(StatusError) as info:
        storage.local_path("ftp://x/y")
    assert str(info.value.status) == "UNIMPLEMENTED: File system scheme 'ftp' not implemented (file: 'ftp://x/y')"
    monkeypatch.delenv(storage.STORAGE_ROOT_ENV)
    assert storage.file_exists("hdfs://nn/m").code == "UNIMPLEMENTED"
    assert storage.file_exists("gs://b/m").code == "UNAVAILABLE"


# ----- JSON and metrics text ------------------------------------------------------------------------


def test_row_and_columnar_predictions_are_written_as_rapidjson_does() -> None:
    assert jsonout.predict_row({"y": ([3], [2.5, 3.0, 4.5])}) == '{\n    "predictions": [2.5, 3.0, 4.5\n    ]\n}'
    assert jsonout.predict_columnar({"y": ([2], [1.0, 2.0])}) == (
        '{\n    "outputs": [\n        1.0,\n        2.0\n    ]\n}')
    assert jsonout.error('bad "x"') == '{\n    "error": "bad \\"x\\""\n}'


@pytest.mark.parametrize(("value", "text"), [(3.0, "3.0"), (0.5, "0.5"), (9000000.0, "9e+06"),
                                             (float("nan"), "NaN"), (float("-inf"), "-Infinity")])
def test_floats_are_written_as_write_decimal_does(value: float, text: str) -> None:
    assert jsonout.decimal(value) == text


def test_the_prometheus_page_format() -> None:
    r = metrics.Registry()
    r.counter("/tensorflow/serving/request_count", "model_name", "status")
    r.sampler("/x/latency", [10.0, 100.0, metrics.exponential_buckets(1, 2, 0)[0]], "model_name")
    r.increment("/tensorflow/serving/request_count", ("m", "OK"), 2)
    r.observe("/x/latency", ("m",), 10.0)  # a value equal to a limit goes to the next bucket
    assert r.prometheus_page() == (
        "# TYPE :tensorflow:serving:request_count counter\n"
        ':tensorflow:serving:request_count{model_name="m",status="OK"} 2\n'
        "# TYPE :x:latency histogram\n"
        ':x:latency_bucket{model_name="m",le="10"} 0\n'
        ':x:latency_bucket{model_name="m",le="100"} 1\n'
        ':x:latency_bucket{model_name="m",le="+Inf"} 1\n'
        ':x:latency_sum{model_name="m"} 10\n'
        ':x:latency_count{model_name="m"} 1\n'
    )
    assert metrics.exponential_buckets(10, 1.8, 33)[:3] == [10, 18, 32.4]


# ----- cards and the image ---------------------------------------------------------------------------


def test_cards_are_checked() -> None:
    card = parse_card({"function": {"linear": {"a": 0.5, "b": 2}}, "load_error": "boom", "error_rate": 0.5})
    assert (card.a, card.b, card.load_error, card.error_rate) == (0.5, 2.0, Status("UNKNOWN", "boom"), 0.5)
    for bad in ({"colour": 1}, {"error_rate": 2}, {"function": {"cubic": {}}}, {"load_error": {"code": "NOPE"}}):
        with pytest.raises(CardError):
            parse_card(bad)


def test_the_image_description() -> None:
    assert image.ENTRYPOINT == ["/usr/bin/tf_serving_entrypoint.sh"]
    assert image.ENV["MODEL_NAME"] == "model" and image.ENV["MODEL_BASE_PATH"] == "/models"
    assert image.image_env("tensorflow/serving:2.19.0-gpu")["CUDA"] == "12.5"
    assert image.is_serving_image("docker.io/tensorflow/serving:latest")
    assert not image.is_serving_image("tensorflow/serving-api:1")
    files = image.image_files("/venv/bin/python", "/src/operator:/src", image="tensorflow/serving:2.18.1")
    script, mode = files["/usr/bin/tf_serving_entrypoint.sh"]
    assert mode == 0o755 and "exec" not in script
    assert script.splitlines()[-1] == (
        "tensorflow_model_server --port=8500 --rest_api_port=8501 --model_name=${MODEL_NAME} "
        '--model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME} "$@"')
    wrapper, _ = files["/usr/bin/tensorflow_model_server"]
    assert 'exec /venv/bin/python -m e2e.standin "$@"' in wrapper
    assert "TFSERVING_STANDIN_VERSION=2.18.1" in wrapper


def test_the_first_run_of_a_signature_pays_for_its_executors_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from e2e.standin import protos, servable

    slept: list[float] = []
    monkeypatch.setattr(servable.time, "sleep", slept.append)
    session = servable.Session(parse_card({"first_run_seconds": 0.4, "latency_seconds": 0.001}), metrics.Registry())
    feeds = {session.feed: servable.Tensor(protos.DT_FLOAT, [1], [1.0])}
    for _ in range(3):
        status, _ = session.run(feeds, [session.fetch], timeout_ms=0)
        assert status.ok
    # The executors' creation once, then the run's own latency every time.
    assert slept == [0.4, 0.001, 0.001, 0.001]
    with pytest.raises(CardError, match="first_run_seconds must not be negative"):
        parse_card({"first_run_seconds": -1})
