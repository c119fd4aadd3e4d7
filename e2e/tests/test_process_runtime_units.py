"""The pure parts of the process runtime, its options, and its refusal to run where it
cannot. No pod runs here (see test_process_runtime.py for those)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from e2e.localcluster import LocalCluster
from e2e.localcluster.controllers import parse_options
from e2e.localcluster.controllers.nodes import build_node
from e2e.localcluster.controllers.process import (
    RUNTIME_LABEL,
    ProcessRuntimeUnavailable,
    runtime,
    sandbox,
)
from e2e.localcluster.controllers.process import containers as ct
from e2e.localcluster.controllers.process.expansion import expand, mapping_for
from e2e.localcluster.controllers.process.images import (
    ImageContext,
    ImageNotKnown,
    ImageRegistry,
    repository,
    tf_serving_image,
    tfleet_image,
)
from e2e.localcluster.controllers.process.logs import Entry, log_lines, select
from e2e.localcluster.controllers.process.runtime import _start_time


@pytest.mark.parametrize(("text", "expected"), [
    ("$(A)", "a"),
    ("$(A)-$(B)", "a-b"),
    ("$$(A)", "$(A)"),
    ("$$", "$"),
    ("$(MISSING)", "$(MISSING)"),
    ("$(A", "$(A"),
    ("a$b", "a$b"),
    ("$", "$"),
    ("x$$$(A)", "x$a"),
    ("$()", "$()"),
])
def test_expansion_follows_the_kubelet(text: str, expected: str) -> None:
    assert expand(text, mapping_for({"A": "a", "B": "b"})) == expected


def test_command_line_has_docker_semantics() -> None:
    env = {"X": "1"}
    entry, cmd = ["/entry"], ["default", "$(X)"]
    assert ct.command_line({}, entry, cmd, env) == ["/entry", "default", "$(X)"]  # image parts unexpanded
    assert ct.command_line({"args": ["a", "$(X)"]}, entry, cmd, env) == ["/entry", "a", "1"]
    assert ct.command_line({"command": ["run"]}, entry, cmd, env) == ["run"]  # CMD dropped
    assert ct.command_line({"command": ["run", "$(X)"], "args": ["$$(X)"]}, entry, cmd, env) == ["run", "1", "$(X)"]
    with pytest.raises(ct.ContainerCreateError):
        ct.command_line({}, [], [], env)


CTX = ct.PodContext(name="p", namespace="ns", uid="u", node_name="n", service_account="sa",
                    pod_ip="10.244.1.2", host_ip="172.18.0.2", labels={"app": "x"})


def test_env_order_prefix_and_references() -> None:
    cms = {"cfg": {"data": {"k": "v", "A": "from-cm"}}}
    secrets = {"s": {"data": {"t": base64.b64encode(b"tok").decode()}}}
    container = {
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "P_"}, {"secretRef": {"name": "s"}}],
        "env": [
            {"name": "A", "value": "$(P_k)/$(t)/$(B)"},
            {"name": "B", "value": "b"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "none", "key": "x", "optional": True}}},
        ],
    }
    assert ct.container_env(container, CTX, cms, secrets) == {
        "P_k": "v", "P_A": "from-cm", "t": "tok", "A": "v/tok/$(B)", "B": "b", "POD": "p", "LABEL": "x"}


@pytest.mark.parametrize(("var", "message"), [
    ({"configMapKeyRef": {"name": "gone", "key": "k"}}, 'configmap "gone" not found'),
    ({"configMapKeyRef": {"name": "cfg", "key": "nokey"}}, "couldn't find key nokey in ConfigMap ns/cfg"),
    ({"secretKeyRef": {"name": "gone", "key": "k"}}, 'secret "gone" not found'),
    ({"secretKeyRef": {"name": "s", "key": "nokey"}}, "couldn't find key nokey in Secret ns/s"),
])
def test_env_errors_carry_the_kubelet_messages(var: dict[str, Any], message: str) -> None:
    container = {"env": [{"name": "X", "valueFrom": var}]}
    with pytest.raises(ct.ContainerConfigError) as err:
        ct.container_env(container, CTX, {"cfg": {"data": {}}, "gone": None}, {"s": {"data": {}}, "gone": None})
    assert str(err.value) == message


def test_volume_plans_and_missing_sources() -> None:
    pod = {"metadata": {"namespace": "ns"}, "spec": {"volumes": [
        {"name": "c", "configMap": {"name": "cfg", "items": [{"key": "a", "path": "dir/a.txt", "mode": 0o600}]}},
        {"name": "e", "emptyDir": {}},
        {"name": "v", "persistentVolumeClaim": {"claimName": "data", "readOnly": True}},
    ]}}
    plans = ct.volume_plans(pod, {"cfg": {"data": {"a": "A", "b": "B"}}}, {})
    assert plans["c"].files == (ct.KeyFile("dir/a.txt", b"A", 0o600),)
    assert plans["e"].kind == "emptyDir"
    assert plans["v"].claim == "data" and plans["v"].read_only
    with pytest.raises(ct.VolumeError, match='volume "c" : configmap "cfg" not found'):
        ct.volume_plans(pod, {"cfg": None}, {})
    projected = {"metadata": {}, "spec": {"volumes": [{"name": "x", "projected": {"sources": []}}]}}
    with pytest.raises(ct.VolumeError, match="volume type projected is not supported"):
        ct.volume_plans(projected, {}, {})
    with pytest.raises(ct.ContainerCreateError):
        ct.safe_sub_path("../escape")


def test_backoff_doubles_caps_and_resets() -> None:
    bo = ct.Backoff(10, 300)
    assert not bo.in_backoff_since(0, 0)  # the first exit restarts at once
    bo.next(0, 0)
    assert bo.delay == 10 and bo.in_backoff_since(5, 9) and not bo.in_backoff_since(5, 15.1)
    delays = []
    for t in range(1, 8):
        bo.next(t, t)
        delays.append(bo.delay)
    assert delays == [20, 40, 80, 160, 300, 300, 300]
    bo.next(7 + 601, 7 + 601)  # more than 2 x max after the last update: starts over
    assert bo.delay == 10


@pytest.mark.parametrize(("seconds", "text"), [
    (10, "10s"), (80, "1m20s"), (300, "5m0s"), (0.5, "500ms"), (15, "15s"), (3725, "1h2m5s")])
def test_go_durations(seconds: float, text: str) -> None:
    assert ct.go_duration(seconds) == text


def test_termination_messages() -> None:
    lines = [f"line {i}\n" for i in range(100)]
    assert ct.termination_message("File", 1, b"from file", lines) == "from file"
    assert ct.termination_message("File", 1, b"", lines) == ""
    assert ct.termination_message("FallbackToLogsOnError", 0, b"", lines) == ""
    tail = ct.termination_message("FallbackToLogsOnError", 2, b"", lines)
    assert tail.startswith("line 20\n") and tail.endswith("line 99\n")  # the last 80 lines
    big = ["x" * 100 + "\n"] * 80
    assert len(ct.termination_message("FallbackToLogsOnError", 2, b"", big).encode()) == 2048
    assert len(ct.termination_message("File", 0, b"y" * 5000, [])) == 4096


def test_grace_periods() -> None:
    pod = {"metadata": {}, "spec": {"terminationGracePeriodSeconds": 30}}
    assert ct.grace_period_seconds(pod) == 30
    assert ct.grace_period_seconds({"metadata": {"deletionGracePeriodSeconds": 5}, "spec": pod["spec"]}) == 5
    assert ct.grace_period_seconds({"metadata": {"deletionGracePeriodSeconds": 0}, "spec": {}}) == 2
    assert ct.remaining_grace(10, 3.9) == 7  # the hook's time counts in whole seconds
    assert ct.remaining_grace(3, 2.5) == 2 and ct.remaining_grace(3, 9) == 2


def test_phase_and_conditions() -> None:
    spec = {"restartPolicy": "Always", "initContainers": [{"name": "side", "restartPolicy": "Always"}],
            "containers": [{"name": "main"}]}
    side = {"name": "side", "started": True, "ready": True, "state": {"running": {}}}
    main = {"name": "main", "ready": False, "state": {"running": {}}}
    assert ct.pod_phase(spec, [side], [main]) == "Running"
    conds = {c["type"]: c for c in ct.kubelet_conditions(spec, [side], [main], "Running", True, {})}
    assert conds["Initialized"]["status"] == "True"
    assert conds["Ready"]["message"] == "containers with unready status: [main]"
    waiting_side = {**side, "started": False, "state": {"running": {}}}
    assert ct.pod_phase(spec, [waiting_side], [{"name": "main", "state": {"waiting": {}}}]) == "Pending"
    never = {"restartPolicy": "Never", "containers": [{"name": "main"}]}
    failed = {"name": "main", "state": {"terminated": {"exitCode": 1}}}
    assert ct.pod_phase(never, [], [failed]) == "Failed"
    assert ct.pod_phase(never, [], [{"name": "main", "state": {"terminated": {"exitCode": 0}}}]) == "Succeeded"


def test_log_lines_join_partial_entries_and_select() -> None:
    entries = [Entry("t1", "stdout", True, "hel"), Entry("t2", "stdout", False, "lo"),
               Entry("t3", "stderr", False, "world")]
    assert log_lines(entries) == ["hello\n", "world\n"]
    assert log_lines(entries, timestamps=True) == ["t1 hello\n", "t3 world\n"]
    assert select(["a\n", "b\n", "c\n"], 2, None) == "b\nc\n"
    assert select(["a\n", "b\n"], 0, None) == ""
    assert select(["abc\n"], None, 2) == "ab"


def test_image_references_and_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert repository("tensorflow/serving:2.19.0-gpu") == "docker.io/tensorflow/serving"
    assert repository("nginx") == "docker.io/library/nginx"
    assert repository("ghcr.io/tfleet/tfleet@sha256:abc") == "ghcr.io/tfleet/tfleet"
    assert repository("localhost:5000/x:1") == "localhost:5000/x"
    reg = ImageRegistry(ImageContext("/usr/bin/python3", tmp_path), {"my/img": {"entrypoint": ["/x"]}})
    assert reg.recipe("tensorflow/serving:2.19.0") is tf_serving_image
    assert reg.recipe("docker.io/tensorflow/serving:latest-gpu") is tf_serving_image
    assert reg.recipe("ghcr.io/tfleet/tfleet:0.1.0") is tfleet_image
    monkeypatch.setenv("TFLEET_BRIDGE_IMAGE", "registry.example/ops/bridge:7")
    assert reg.recipe("registry.example/ops/bridge:8") is tfleet_image
    assert reg.resolve("my/img:3").entrypoint == ("/x",)
    with pytest.raises(ImageNotKnown, match=r"does not know image docker\.io/library/busybox"):
        reg.resolve("busybox:1.36")
    image = tfleet_image("ghcr.io/tfleet/tfleet:0.1.0", ImageContext("/py", tmp_path))
    assert image.entrypoint == ("/opt/tfleet/bin/tfleet",) and image.cmd == ("run", "--all-namespaces")
    assert image.env["PATH"].startswith("/opt/tfleet/bin:")
    wrapper, mode = image.files["/opt/tfleet/bin/tfleet"]
    assert mode == 0o755 and 'exec "/py" -m tfleet.cli "$@"' in str(wrapper)


def test_the_stand_in_image_gets_the_storage_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    fake = types.ModuleType("e2e.standin.image")
    fake.ENTRYPOINT = ["/usr/bin/tf_serving_entrypoint.sh"]  # type: ignore[attr-defined]
    fake.ENV = {"MODEL_BASE_PATH": "/models"}  # type: ignore[attr-defined]
    fake.image_files = lambda python, pythonpath: {  # type: ignore[attr-defined]
        "/usr/bin/tf_serving_entrypoint.sh": (f"#!/bin/sh\nPYTHONPATH={pythonpath} exec {python}\n", 0o755)}
    package = types.ModuleType("e2e.standin")
    package.image = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "e2e.standin", package)
    monkeypatch.setitem(sys.modules, "e2e.standin.image", fake)
    image = tf_serving_image("tensorflow/serving:2.19.0", ImageContext("/py", tmp_path))
    assert image.env["TFSERVING_STANDIN_STORAGE_ROOT"] == str(tmp_path / "objects")
    assert image.env["MODEL_BASE_PATH"] == "/models"
    assert image.entrypoint == ("/usr/bin/tf_serving_entrypoint.sh",)
    assert "exec /py" in str(image.files["/usr/bin/tf_serving_entrypoint.sh"][0])


@pytest.mark.parametrize(("options", "message"), [
    ({"process_runtime": "yes"}, "process_runtime must be true or false"),
    ({"backoff_scale": 0}, "backoff_scale must be positive"),
    ({"backoff_scale": "fast"}, "backoff_scale must be a number"),
    ({"storage_root": 3}, "storage_root must be a path"),
    ({"images": {"x": {"entrypoint": "/bin/x"}}}, r"images\[x\].entrypoint must be a list"),
    ({"images": {"x": {"entry": []}}}, "unknown field"),
])
def test_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_options(options)


def test_the_cluster_option_labels_nodes_unless_the_topology_does() -> None:
    from datetime import UTC, datetime

    opts = parse_options({"process_runtime": True})
    assert opts["process_runtime"] and opts["backoff_scale"] == 1.0
    from e2e.localcluster.controllers import node_default_labels

    labels = node_default_labels(opts)
    now = datetime.now(UTC)
    assert build_node({"name": "a"}, 1, now, labels)["metadata"]["labels"][RUNTIME_LABEL] == "process"
    own = {"name": "b", "labels": {RUNTIME_LABEL: "simulated"}}
    assert build_node(own, 2, now, labels)["metadata"]["labels"][RUNTIME_LABEL] == "simulated"
    assert RUNTIME_LABEL not in build_node({"name": "c"}, 3, now, {})["metadata"]["labels"]


async def test_start_fails_loudly_without_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "missing_host_support", lambda: ["the 'ip' command (iproute2 / util-linux)"])
    lc = LocalCluster(port=0, controller_options={"process_runtime": True})
    with pytest.raises(ProcessRuntimeUnavailable, match="needs the 'ip' command"):
        await lc.start()
    # a topology that asks for process nodes fails the same way
    topology = {"nodes": [{"name": "p", "labels": {RUNTIME_LABEL: "process"}}]}
    with pytest.raises(ProcessRuntimeUnavailable):
        await LocalCluster(port=0, controller_options={"topology": topology}).start()


def test_leftovers_of_a_dead_run_are_removed(tmp_path: Path) -> None:
    base = tmp_path / "runs"
    dead = base / "zzzz"
    dead.mkdir(parents=True)
    # a process that has exited: its pid is free (and, were it reused, its start time differs)
    proc = subprocess.Popen(["true"])
    proc.wait()
    (dead / "owner.json").write_text(json.dumps({"pid": proc.pid, "start": "0"}))
    live = base / "yyyy"
    live.mkdir()
    (live / "owner.json").write_text(json.dumps({"pid": os.getpid(), "start": _start_time(os.getpid())}))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                str(dead) + "/spec.json"])
    subprocess.run(["ip", "netns", "add", "lcpzzzz-1"], check=True)
    try:
        removed = runtime.remove_dead_runs(base)
        assert "zzzz" in removed and "yyyy" not in removed
        assert sandbox.list_netns("lcpzzzz") == []
        assert not dead.exists() and live.exists()
        assert sleeper.wait(timeout=5) == -9
    finally:
        sleeper.kill()
        subprocess.run(["ip", "netns", "del", "lcpzzzz-1"], capture_output=True, check=False)


def test_the_command_line_asks_for_the_process_runtime() -> None:
    from e2e.localcluster.__main__ import controller_options, parse_args

    args = parse_args(["--kubeconfig", "kc", "--process-runtime", "--storage-root", "/srv/models"])
    assert controller_options(args) == {"process_runtime": True, "storage_root": Path("/srv/models")}
    assert controller_options(parse_args(["--kubeconfig", "kc"])) == {}
    parse_options(controller_options(args))  # valid as it is
