"""Table tests of the `tfleet` command's kubectl habits: durations, names, cluster resolution,
exit statuses, output formats and the pure parts of `rollout status`, `rollout get` and
`predict`. Commands run as the installed console script where their exit status matters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tfleet.api.crd import build_crd
from tfleet.api.schema import duration_seconds
from tfleet.cli import cluster, exits, flags, output, predict, rollout, tensors, tree
from tfleet.cli import predict_protos as protos
from tfleet.cli.exits import CliError
from tfleet.durations import DurationError, format_duration, parse_duration, parse_flag_duration
from tfleet.health import probe_report

from .isvc_factory import REPO

TFLEET = Path(sys.executable).with_name("tfleet")


def tfleet(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
           cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TFLEET), *args], input=stdin, capture_output=True, text=True, timeout=60,
                          env=env, cwd=cwd or REPO)


# --------------------------------------------------------------------------- durations

# Values and results as Go's time.ParseDuration gives them (src/time/format.go).
GO_DURATIONS = [
    ("90s", 90.0), ("2m", 120.0), ("1h30m", 5400.0), ("1.5h", 5400.0), ("300ms", 0.3), ("1m30s", 90.0),
    ("0", 0.0), ("-1m", -60.0), ("+5s", 5.0), (".5s", 0.5), ("1.s", 1.0), ("2h45m10.5s", 9910.5),
    ("10us", 1e-5), ("10µs", 1e-5), ("10μs", 1e-5), ("100ns", 1e-7),
]
GO_ERRORS = [
    ("", 'time: invalid duration ""'), ("2x", 'time: unknown unit "x" in duration "2x"'),
    ("1", 'time: missing unit in duration "1"'), ("1d", 'time: unknown unit "d" in duration "1d"'),
    ("s", 'time: invalid duration "s"'), (".s", 'time: invalid duration ".s"'),
    ("1m 30s", 'time: unknown unit "m " in duration "1m 30s"'), ("-", 'time: invalid duration "-"'),
    ("99999999999h", 'time: invalid duration "99999999999h"'),
]


@pytest.mark.parametrize(("text", "seconds"), GO_DURATIONS)
def test_go_durations_parse_as_go_parses_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "message"), GO_ERRORS)
def test_go_duration_errors_are_gos(text: str, message: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(text)
    assert str(info.value) == message


@pytest.mark.parametrize(("text", "seconds"), [("30", 30.0), ("0.5", 0.5), ("0", 0.0), ("2m", 120.0), (" 90s ", 90.0)])
def test_flags_also_take_bare_seconds(text: str, seconds: float) -> None:
    assert parse_flag_duration(text) == seconds


@pytest.mark.parametrize("pause", ["60s", "2m", "1h30m", "500ms", "1m30s"])
def test_the_spec_reads_durations_with_the_same_parser(pause: str) -> None:
    assert duration_seconds(pause) == parse_duration(pause) == parse_flag_duration(pause)


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (45, "45s"), (90, "1m30s"), (120, "2m"), (5400, "1h30m"),
                                               (3605, "1h5s"), (0.25, "250ms"), (1.5, "1.5s")])
def test_format_duration_reads_back(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


DURATION_FLAGS = [
    ["rollout", "status", "x", "--timeout"],
    ["rollout", "status", "x", "--interval"],
    ["rollout", "get", "x", "--interval"],
    ["probe", "--target", "127.0.0.1:1", "--model", "m", "--timeout"],
    ["health-bridge", "--model", "m", "--interval"],
    ["health-bridge", "--model", "m", "--drain-seconds"],
    ["run", "--leader-election-lease-duration"],
    ["predict", "--address", "127.0.0.1:1", "--model", "m", "--instances", "[[1]]", "--timeout"],
    ["predict", "--address", "127.0.0.1:1", "--model", "m", "--instances", "[[1]]", "--rate", "1", "--duration"],
]


@pytest.mark.parametrize("argv", DURATION_FLAGS, ids=lambda a: " ".join(a[:2]) + " " + a[-1])
def test_every_duration_flag_takes_go_durations_and_names_itself_when_wrong(argv: list[str]) -> None:
    from tfleet.cli.main import build_parser

    args = build_parser().parse_args([*argv, "2m"])
    dest = argv[-1].lstrip("-").replace("-", "_")
    assert getattr(args, dest) == 120.0
    result = tfleet(*argv, "2x")
    assert result.returncode == exits.EXIT_USAGE, result.stderr
    assert f"argument {argv[-1]}: " in result.stderr
    assert 'unknown unit "x" in duration "2x"' in result.stderr
    assert "Traceback" not in result.stderr and "invalid float value" not in result.stderr


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("text", ["fraud", "tfis/fraud", "inferenceservice/fraud", "inferenceservices/fraud",
                                  "InferenceService/fraud", "tfis.tfleet.dev/fraud",
                                  "inferenceservices.v1alpha1.tfleet.dev/fraud", "TFIS/fraud"])
def test_an_inferenceservice_is_named_as_kubectl_names_it(text: str) -> None:
    assert flags.isvc_reference(text) == "fraud"


@pytest.mark.parametrize(("text", "part"), [("deploy/fraud", '"deploy" is not an InferenceService resource'),
                                            ("tfis/", '"" is not an object name'),
                                            ("Fraud", '"Fraud" is not an object name'),
                                            ("tfis/a/b", '"a/b" is not an object name')])
def test_other_names_are_refused_naming_the_rule(text: str, part: str) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError) as info:
        flags.isvc_reference(text)
    assert part in str(info.value)


def test_the_accepted_resource_names_are_the_crds() -> None:
    names = build_crd()["spec"]["names"]
    assert set(flags.SHORT_NAMES) == set(names["shortNames"])
    for name in [names["plural"], names["singular"], *names["shortNames"]]:
        assert name in flags.ISVC_RESOURCES and f"{name}.{build_crd()['spec']['group']}" in flags.ISVC_RESOURCES


# --------------------------------------------------------------------------- exit statuses


def test_the_health_commands_use_the_same_exit_statuses() -> None:
    assert (probe_report.EXIT_AVAILABLE, probe_report.EXIT_NOT_AVAILABLE) == (exits.EXIT_OK, exits.EXIT_FAILED)
    assert probe_report.EXIT_USAGE == exits.EXIT_USAGE
    assert probe_report.EXIT_UNREACHABLE == exits.EXIT_UNREACHABLE
    codes = [code for code, _ in exits.TABLE]
    assert len(codes) == len(set(codes))


def test_help_prints_the_exit_statuses() -> None:
    result = tfleet("--help")
    assert result.returncode == 0
    for code, meaning in exits.TABLE:
        assert f"  {code}  {meaning}" in result.stdout


USAGE_ERRORS = [
    ["rollout", "status"],  # no name
    ["rollout", "status", "deploy/x"],
    ["rollout", "get", "x", "-o", "xml"],
    ["render", "-f", "examples/gpu.yaml", "-o", "wide"],
    ["nonsense"],
    ["predict", "--address", "127.0.0.1:1", "--instances", "[[1]]"],  # no --model
    ["predict", "--address", "127.0.0.1:1", "--model", "m"],  # no input
    ["predict", "--address", "127.0.0.1:1", "--model", "m", "--instances", "not json"],
    ["predict", "--address", "127.0.0.1:1", "--model", "m", "--instances", "[[1]]", "--duration", "5s"],
    ["predict", "--address", "127.0.0.1:1", "--model", "m", "--instances", "[[1]]", "--rate", "0"],
]


@pytest.mark.parametrize("argv", USAGE_ERRORS, ids=" ".join)
def test_usage_errors_exit_3_without_a_traceback(argv: list[str]) -> None:
    result = tfleet(*argv)
    assert result.returncode == exits.EXIT_USAGE, (result.stdout, result.stderr)
    assert "error:" in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- cluster resolution


def kubeconfig(path: Path, contexts: dict[str, str | None], current: str | None = None,
               server: str = "http://127.0.0.1:1") -> Path:
    doc: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": n, "context": {"cluster": "c", "user": "u", **({"namespace": ns} if ns else {})}}
                     for n, ns in contexts.items()],
    }
    if current:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return path


def test_namespace_comes_from_the_flag_then_the_context_then_default(tmp_path: Path) -> None:
    kc = kubeconfig(tmp_path / "kc", {"one": "ml", "two": None}, current="one")
    env = {"KUBECONFIG": str(kc)}
    assert cluster.resolve(None, None, None, env).namespace == "ml"
    assert cluster.resolve(None, None, "team", env).namespace == "team"
    assert cluster.resolve(None, "two", None, env).namespace == "default"
    assert cluster.resolve(str(kc), "one", None, {}).namespace == "ml"


def test_kubeconfig_merges_the_files_of_KUBECONFIG_that_exist(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "a", {"one": "ml"}, current="one")
    second = kubeconfig(tmp_path / "b", {"other": "x"})
    env = {"KUBECONFIG": f"{tmp_path / 'missing'}:{first}:{second}"}
    assert cluster.kubeconfig_files(None, env) == (str(first), str(second))
    assert cluster.resolve(None, "other", None, env).namespace == "x"


def test_the_home_kubeconfig_is_the_fallback(tmp_path: Path) -> None:
    (tmp_path / ".kube").mkdir()
    kubeconfig(tmp_path / ".kube" / "config", {"one": "ml"}, current="one")
    assert cluster.kubeconfig_files(None, {}, home=str(tmp_path)) == (str(tmp_path / ".kube" / "config"),)


CONFIG_ERRORS = [
    ("missing flag file", lambda p: ({}, str(p / "nope"), None), '--kubeconfig: the file "'),
    ("no configuration at all", lambda p: ({"KUBECONFIG": str(p / "nope")}, None, None), "no cluster configuration"),
    ("unknown context", lambda p: ({"KUBECONFIG": str(kubeconfig(p / "kc", {"one": None}, "one"))}, None, "three"),
     'context "three" is not in'),
    ("no current context", lambda p: ({"KUBECONFIG": str(kubeconfig(p / "kc", {"one": None}))}, None, None),
     "sets no current-context; pass --context"),
]


@pytest.mark.parametrize(("name", "setup", "message"), CONFIG_ERRORS, ids=[c[0] for c in CONFIG_ERRORS])
def test_configuration_errors(tmp_path: Path, name: str, setup: Any, message: str) -> None:
    env, flag, context = setup(tmp_path)
    with pytest.raises(CliError) as info:
        cluster.resolve(flag, context, None, env, home=str(tmp_path), account_dir=tmp_path / "sa")
    assert info.value.code == exits.EXIT_CONFIG
    assert message in info.value.message


def test_in_cluster_without_a_kubeconfig_uses_the_service_account_namespace(tmp_path: Path) -> None:
    account = tmp_path / "sa"
    account.mkdir()
    (account / "token").write_text("t")
    (account / "namespace").write_text("serving\n")
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443", "KUBECONFIG": ""}
    target = cluster.resolve(None, None, None, env, home=str(tmp_path), account_dir=account)
    assert (target.kubeconfig_files, target.namespace) == ((), "serving")
    assert cluster.resolve(None, None, None, {**env, "POD_NAMESPACE": "p"}, home=str(tmp_path),
                           account_dir=account).namespace == "p"


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    return {**env, "HOME": str(tmp_path), **extra}


@pytest.mark.parametrize("argv", [["rollout", "status", "fraud"], ["rollout", "get", "tfis/fraud"],
                                  ["rollout", "history", "fraud"], ["predict", "fraud", "--instances", "[[1]]"],
                                  ["run"]], ids=" ".join)
def test_without_a_kubeconfig_commands_exit_4_with_one_line(tmp_path: Path, argv: list[str]) -> None:
    result = tfleet(*argv, env=clean_env(tmp_path))
    assert result.returncode == exits.EXIT_CONFIG, result.stderr
    assert result.stderr.startswith("error: no cluster configuration: no --kubeconfig, no $KUBECONFIG file")
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 2


@pytest.mark.parametrize("argv", [["rollout", "status", "fraud"], ["rollout", "get", "fraud"],
                                  ["rollout", "pause", "fraud"], ["predict", "fraud", "--instances", "[[1]]"]],
                         ids=" ".join)
def test_an_api_server_that_is_down_exits_5_with_one_line(tmp_path: Path, argv: list[str]) -> None:
    kc = kubeconfig(tmp_path / "kc", {"one": "ml"}, current="one", server="http://127.0.0.1:9")
    result = tfleet(*argv, "--kubeconfig", str(kc), env=clean_env(tmp_path))
    assert result.returncode == exits.EXIT_UNREACHABLE, result.stderr
    assert result.stderr.splitlines()[0] == "error: cannot reach the API server at http://127.0.0.1:9: connection refused"
    assert "urllib3" not in result.stderr and "Traceback" not in result.stderr


def test_cluster_flags_work_before_the_command_too(tmp_path: Path) -> None:
    from tfleet.cli.main import build_parser

    args = build_parser().parse_args(["--context", "two", "-n", "ml", "rollout", "status", "x", "-n", "team"])
    flags.merge_root_flags(args)
    assert (args.context, args.namespace) == ("two", "team")
    result = tfleet("--kubeconfig", str(tmp_path / "nope"), "rollout", "status", "x", env=clean_env(tmp_path))
    assert result.returncode == exits.EXIT_CONFIG
    assert f'--kubeconfig: the file "{tmp_path / "nope"}" does not exist' in result.stderr


# --------------------------------------------------------------------------- output


@pytest.mark.parametrize(("obj", "name"), [
    ({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"}}, "deployment.apps/a"),
    ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}, "configmap/a"),
    ({"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "a"}},
     "inferenceservice.tfleet.dev/a"),
    ({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "a"}},
     "horizontalpodautoscaler.autoscaling/a"),
])
def test_output_name_is_kubectls(obj: dict[str, Any], name: str) -> None:
    assert output.object_name(obj) == name


@pytest.mark.parametrize(("text", "columns", "expected"), [
    ("short", 10, "short"), ("exactly-10", 10, "exactly-10"), ("a line that is too long", 10, "a line th…"),
    ("\033[32mgreen text here\033[0m", 6, "\033[32mgreen…\033[0m"), ("日本語テキスト", 7, "日本語…"),
])
def test_truncate_counts_terminal_columns(text: str, columns: int, expected: str) -> None:
    assert output.truncate(text, columns) == expected
    assert output.display_width(output.truncate(text, columns)) <= columns


def test_json_of_several_objects_is_a_list() -> None:
    objs = [{"kind": "A", "apiVersion": "v1", "metadata": {"name": "a"}},
            {"kind": "B", "apiVersion": "v1", "metadata": {"name": "b"}}]
    assert json.loads(output.print_objects(objs, "json"))["kind"] == "List"
    assert json.loads(output.print_objects(objs[:1], "json")) == objs[0]
    assert list(yaml.safe_load_all(output.print_objects(objs, "yaml"))) == objs


# --------------------------------------------------------------------------- rollout status


def isvc_body(generation: int = 2, observed: int | None = 2, **rollout_status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "fraud", "namespace": "ml", "generation": generation,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"model": {"basePath": "gs://m", "version": 2},
                     "rollout": {"steps": [{"weight": 25, "pause": "2m"}, {"weight": 50, "pause": "60s"}]}},
            "status": {"observedGeneration": observed, "ready": "3/3", "servingVersion": 1,
                       "rollout": rollout_status,
                       "conditions": [{"type": "Ready", "status": "True", "reason": "Available"}]}}


def test_an_unobserved_generation_is_told_once_after_the_grace() -> None:
    watch = rollout.GenerationWatch(grace=5)
    body = isvc_body(generation=7, observed=6, phase="Succeeded")
    assert rollout.outcome(body) is None  # a stale "Succeeded" is not the new spec's outcome
    assert watch.check(body, now=100.0) is None
    assert watch.check(body, now=104.9) is None
    assert watch.check(body, now=105.0) == "the operator has not observed generation 7 (is it running?)"
    assert watch.check(body, now=200.0) is None  # said once
    assert watch.check(isvc_body(generation=7, observed=7), now=201.0) is None
    assert "observed-generation=6/7" in rollout.describe(body)


def test_a_current_status_has_its_outcome() -> None:
    assert rollout.outcome(isvc_body(phase="Succeeded")) == exits.EXIT_OK
    assert rollout.outcome(isvc_body(phase="RolledBack")) == exits.EXIT_FAILED
    assert rollout.outcome(isvc_body(phase="Progressing")) is None


# --------------------------------------------------------------------------- rollout get


def deployment(revision: str, version: int, replicas: int, ready: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"fraud-{revision}", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": {"tfleet.dev/revision": revision, "tfleet.dev/model-version": str(version)}},
            "spec": {"replicas": replicas}, "status": {"readyReplicas": ready, "updatedReplicas": ready}}


def pod(revision: str, version: int, suffix: str, ready: bool, restarts: int = 0) -> dict[str, Any]:
    return {"metadata": {"name": f"fraud-{revision}-{suffix}", "creationTimestamp": "2026-01-01T00:09:00Z",
                         "labels": {"tfleet.dev/revision": revision, "tfleet.dev/model-version": str(version)}},
            "spec": {"containers": [{"name": "tensorflow-serving"}, {"name": "health-bridge"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"name": "tensorflow-serving", "ready": ready, "restartCount": restarts,
                                              "state": {"running": {}}},
                                             {"name": "health-bridge", "ready": True, "restartCount": 0,
                                              "state": {"running": {}}}]}}


def test_the_tree_shows_revisions_deployments_pods_step_weight_and_pause() -> None:
    now = datetime(2026, 1, 1, 0, 10, 0)
    body = isvc_body(phase="Progressing", stableRevision="aaa", canaryRevision="bbb", step=0, weight=25,
                     targetVersion=2, history=["zzz"], message="Step 1 of 2: weight 25%, holding for the pause",
                     stepStartedAt=(now - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    deps = [deployment("aaa", 1, 3, 3), deployment("bbb", 2, 1, 1), deployment("zzz", 0, 0, 0)]
    pods = [pod("aaa", 1, "a1", True), pod("aaa", 1, "a2", True), pod("bbb", 2, "b1", False, restarts=2)]
    summary, root = tree.build_tree(body, deps, pods, now,
                                    {"fraud-bbb-b1": tree.BridgeView("LOADING")})
    text = tree.render_tree(summary, root)
    lines = text.splitlines()
    fields = dict(summary.fields)
    assert fields["  Step"] == "1/2" and fields["  Weight"] == "25%"
    assert fields["  Pause left"] == format_duration(90)  # 2m pause, 30s in; the clock is not read
    assert "\033[" not in text  # plain off a terminal
    order = [line for line in lines if "revision" in line and ("├──" in line or "└──" in line)]
    assert [("bbb" in o, "aaa" in o, "zzz" in o) for o in order] == [(True, False, False), (False, True, False),
                                                                    (False, False, True)]
    canary_pod = next(line for line in lines if "fraud-bbb-b1" in line)
    assert "Pod" in canary_pod and " 2 " in canary_pod and "1/2" in canary_pod and "model LOADING" in canary_pod
    assert any("fraud-aaa" in line and "Deployment" in line and "3/3" in line for line in lines)
    assert any("zzz" in line and "Previous" in line for line in lines)
    assert "│  └──" in text or "   └──" in text
    coloured = tree.render_tree(summary, root, colour=True, columns=60)
    assert "\033[32m" in coloured and all(output.display_width(line) <= 60 for line in coloured.splitlines())


@pytest.mark.parametrize(("seconds", "age"), [(5, "5s"), (119, "119s"), (125, "2m5s"), (600, "10m"), (7200, "120m"),
                                              (3 * 3600 + 60, "3h1m"), (30 * 3600, "30h"), (3 * 86400, "3d"),
                                              (400 * 86400, "400d")])
def test_ages_are_kubectls(seconds: int, age: str) -> None:
    assert tree.human_age(seconds) == age


# --------------------------------------------------------------------------- predict


def float_signature(*names: str, dtype: int = protos.DATA_TYPES["DT_FLOAT"]) -> dict[str, tensors.InputSpec]:
    return {n: tensors.InputSpec(dtype) for n in names}


def test_instances_of_a_single_input_stack_into_one_tensor() -> None:
    form, inputs = tensors.request_tensors({"instances": [[1.0, 2.0], [3.0, 4.0]]}, float_signature("x"))
    assert form == "row"
    shape, values = tensors.tensor_values(inputs["x"])
    assert (shape, values) == ([2, 2], [1.0, 2.0, 3.0, 4.0])


def test_named_instances_and_columnar_inputs() -> None:
    body = {"instances": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]}
    sig = {"a": tensors.InputSpec(protos.DATA_TYPES["DT_INT64"]), "b": tensors.InputSpec(protos.DATA_TYPES["DT_STRING"])}
    _, inputs = tensors.request_tensors(body, sig)
    assert tensors.tensor_values(inputs["a"]) == ([2], [1, 2])
    assert tensors.tensor_values(inputs["b"]) == ([2], ["x", "y"])
    form, columns = tensors.request_tensors({"inputs": {"a": [[5]], "b": [{"b64": "aGk="}]}}, sig)
    assert form == "columnar" and tensors.tensor_values(columns["b"]) == ([1], ["hi"])


@pytest.mark.parametrize(("body", "message"), [
    ({"instances": [[1.0], [1.0, 2.0]]}, "instances[1]: shape [2] differs from the first one's, [1]"),
    ({"instances": [["a"]]}, "expected a number for a float input"),
    ({"instances": []}, '"instances" must be a non-empty list'),
    ({"instances": [1], "inputs": [1]}, 'both "instances" and "inputs"'),
    ({"other": 1}, 'needs "instances" or "inputs"'),
])
def test_bad_request_bodies_name_the_place(body: dict[str, Any], message: str) -> None:
    with pytest.raises(tensors.RequestError) as info:
        tensors.request_tensors(body, float_signature("x"))
    assert message in str(info.value)


def test_answers_print_as_the_rest_api_prints_them() -> None:
    y = protos.TensorProto(dtype=protos.DATA_TYPES["DT_FLOAT"])
    for size in (2, 1):
        y.tensor_shape.dim.add(size=size)
    y.float_val.extend([2.5, 3.5])
    assert tensors.response_json({"y": y}, "row") == {"predictions": [[2.5], [3.5]]}
    assert tensors.response_json({"y": y}, "columnar") == {"outputs": [[2.5], [3.5]]}
    z = protos.TensorProto(dtype=protos.DATA_TYPES["DT_INT32"])
    z.tensor_shape.dim.add(size=2)
    z.int_val.append(7)  # one value fills the shape, as TensorFlow reads it
    assert tensors.response_json({"y": y, "z": z}, "row") == {"predictions": [{"y": [2.5], "z": 7},
                                                                              {"y": [3.5], "z": 7}]}


def test_percentiles_are_nearest_rank() -> None:
    values = [i / 100 for i in range(1, 101)]
    assert predict.percentile(values, 0.5) == 0.5 and predict.percentile(values, 0.99) == 0.99
    assert predict.percentile([0.1], 0.99) == 0.1


def test_a_cluster_address_suggests_a_port_forward() -> None:
    body = isvc_body()
    body["status"]["endpoints"] = {"grpc": "fraud.ml.svc:8500", "rest": "http://fraud.ml.svc:8501/v1/models/fraud"}
    endpoint = predict.endpoint_from_status(body, "rest", None)
    assert endpoint.address == "http://fraud.ml.svc:8501/v1/models/fraud"
    error = predict._unreachable(endpoint, "cannot resolve the host name")
    assert error.code == exits.EXIT_UNREACHABLE
    assert "kubectl port-forward -n ml svc/fraud 8501:8501" in error.hint
    assert "tfleet predict --address localhost:8501 --model fraud" in error.hint
