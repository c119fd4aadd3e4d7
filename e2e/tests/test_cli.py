"""The `tfleet` command against the local control plane and the real operator: kubectl's
cluster flags and names, exit statuses, `rollout status` with a stopped operator and on a
narrow terminal, the `rollout get` tree, and `tfleet predict` against the TF Serving stand-in.

Pod IPs of the simulated cluster are private addresses nothing listens on, so `rollout get`
runs with `--bridge-timeout 0` unless the pods are pointed at 127.0.0.1.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.standin.models import write_version
from e2e.tests import waiting
from tfleet.cli import exits

from .standin_support import PYTHONPATH, StandIn, free_port, wait_until

pytestmark = pytest.mark.usefixtures("operator_process")

ROOT = Path(__file__).resolve().parents[2]


def manifest(name: str, namespace: str, version: int, *, replicas: int = 2, pause: str = "60s",
             **spec: Any) -> str:
    return yaml.safe_dump({
        "apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"basePath": "gs://bucket/models/fraud", "version": version}, "replicas": replicas,
                 "rollout": {"steps": [{"weight": 25, "pause": pause}]}, **spec},
    })


def tfleet(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tfleet.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": PYTHONPATH, **(env or {})})


def get(kubectl: Callable[..., Any], namespace: str, name: str) -> dict[str, Any]:
    return json.loads(kubectl("get", "tfis", name, "-n", namespace, "-o", "json").stdout)  # type: ignore[no-any-return]


def start_ready(kubectl: Callable[..., Any], text: str, namespace: str, name: str) -> dict[str, Any]:
    kubectl("apply", "-f", "-", input=text)
    kubectl("wait", "--for=condition=Ready", f"tfis/{name}", "-n", namespace, "--timeout=60s")
    return get(kubectl, namespace, name)


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 40) -> Any:
    return waiting.wait_for(predicate, timeout, what)


def context_kubeconfig(kubeconfig: Path, tmp_path: Path, namespace: str) -> Path:
    """The cluster's kubeconfig with a second context, "team", whose namespace is `namespace`."""
    doc = yaml.safe_load(kubeconfig.read_text())
    first = doc["contexts"][0]["context"]
    doc["contexts"].append({"name": "team", "context": {**first, "namespace": namespace}})
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


def run_on_a_terminal(argv: list[str], columns: int, until: Callable[[str], bool] | None = None,
                      timeout: float = 40) -> tuple[int, str, str]:
    """Runs `tfleet argv` with stdout on a pseudo-terminal `columns` wide; with `until`, sends
    SIGINT once the output satisfies it. Returns (exit status, terminal output, stderr)."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "tfleet.cli", *argv], stdout=secondary, stderr=subprocess.PIPE,
                            close_fds=True, env={**os.environ, "PYTHONPATH": PYTHONPATH})
    os.close(secondary)
    output, interrupted = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:  # the terminal closed with the process
                    break
                if not chunk:
                    break
                output += chunk
            if until is not None and not interrupted and until(output.decode(errors="replace")):
                proc.send_signal(signal.SIGINT)
                interrupted = True
            if proc.poll() is not None and not ready:
                break
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)
    assert proc.stderr is not None
    return code, output.decode(errors="replace"), proc.stderr.read().decode()


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# --------------------------------------------------------------------------- conventions


def test_status_takes_go_durations_resource_names_and_the_contexts_namespace(kubectl, namespace, kubeconfig, tmp_path):
    start_ready(kubectl, manifest("fraud", namespace, 1, pause="1s"), namespace, "fraud")
    kc = context_kubeconfig(Path(kubeconfig), tmp_path, namespace)
    kubectl("apply", "-f", "-", input=manifest("fraud", namespace, 2, pause="1s"))
    # No -n: the namespace comes from the context chosen with --context.
    done = tfleet("rollout", "status", "tfis/fraud", "--kubeconfig", str(kc), "--context", "team",
                  "--timeout", "2m", "--interval", "200ms")
    assert done.returncode == exits.EXIT_OK, done.stdout + done.stderr
    assert 'inferenceservice "fraud" rolled out' in done.stdout
    # $KUBECONFIG, flags before the command, and the CRD's long name.
    again = tfleet("--context", "team", "rollout", "status", "inferenceservices.tfleet.dev/fraud",
                   "--timeout", "90s", env={"KUBECONFIG": str(kc)})
    assert again.returncode == exits.EXIT_OK, again.stderr
    history = tfleet("rollout", "history", "fraud", "-n", namespace, "--kubeconfig", str(kubeconfig), "-o", "name")
    assert history.returncode == 0, history.stderr
    assert len(history.stdout.splitlines()) == 2
    assert all(line.startswith("deployment.apps/fraud") for line in history.stdout.splitlines())
    wide = tfleet("rollout", "history", "fraud", "-n", namespace, "--kubeconfig", str(kubeconfig), "-o", "wide")
    assert wide.stdout.splitlines()[0].split() == ["REVISION", "VERSION", "ROLE", "READY", "CREATED", "DEPLOYMENT",
                                                   "IMAGE"]
    paused = tfleet("rollout", "pause", "fraud", "-n", namespace, "--kubeconfig", str(kubeconfig), "-o", "json")
    assert json.loads(paused.stdout)["metadata"]["annotations"]["tfleet.dev/rollout-paused"] == "true"


def test_api_errors_and_unknown_contexts_have_their_own_exit_status(kubeconfig, namespace):
    missing = tfleet("rollout", "status", "nope", "-n", namespace, "--kubeconfig", str(kubeconfig))
    assert missing.returncode == exits.EXIT_API
    assert missing.stderr.strip() == 'error: Error from server (NotFound): inferenceservices.tfleet.dev "nope" not found'
    context = tfleet("rollout", "get", "nope", "--kubeconfig", str(kubeconfig), "--context", "elsewhere")
    assert context.returncode == exits.EXIT_CONFIG
    assert 'context "elsewhere" is not in' in context.stderr
    bad = tfleet("rollout", "status", "fraud", "--kubeconfig", str(kubeconfig), "--timeout", "2x")
    assert bad.returncode == exits.EXIT_USAGE and "argument --timeout:" in bad.stderr


def test_status_says_when_the_operator_has_not_observed_the_new_generation(kubectl, namespace, kubeconfig,
                                                                           operator_process):
    body = start_ready(kubectl, manifest("idle", namespace, 1, pause="1s"), namespace, "idle")
    generation = body["metadata"]["generation"]
    operator_process.proc.send_signal(signal.SIGSTOP)  # an operator that is not running
    try:
        kubectl("apply", "-f", "-", input=manifest("idle", namespace, 2, pause="1s"))
        waited = tfleet("rollout", "status", "idle", "-n", namespace, "--kubeconfig", str(kubeconfig),
                        "--timeout", "7s", "--interval", "250ms")
    finally:
        operator_process.proc.send_signal(signal.SIGCONT)
    assert waited.returncode == exits.EXIT_TIMEOUT, waited.stdout + waited.stderr
    assert (f"warning: the operator has not observed generation {generation + 1} (is it running?)"
            in waited.stderr.splitlines())
    assert waited.stderr.count("has not observed") == 1
    assert "rolled out" not in waited.stdout
    assert f"observed-generation={generation}/{generation + 1}" in waited.stdout
    assert "timed out after 7s" in waited.stderr
    done = tfleet("rollout", "status", "idle", "-n", namespace, "--kubeconfig", str(kubeconfig), "--timeout", "1m")
    assert done.returncode == exits.EXIT_OK, done.stderr
    assert "has not observed" not in done.stderr


def test_the_live_view_fits_an_80_column_terminal(kubectl, namespace, kubeconfig):
    start_ready(kubectl, manifest("a-rather-long-inferenceservice-name", namespace, 1, pause="3s"), namespace,
                "a-rather-long-inferenceservice-name")
    kubectl("apply", "-f", "-", input=manifest("a-rather-long-inferenceservice-name", namespace, 2, pause="3s"))
    code, text, err = run_on_a_terminal(["rollout", "status", "a-rather-long-inferenceservice-name", "-n", namespace,
                                         "--kubeconfig", str(kubeconfig), "--timeout", "40s", "--interval", "200ms"],
                                        columns=80)
    assert code == exits.EXIT_OK, text + err
    *redraws, last = [part for part in text.split("\r\n") if part]
    frames = [f for f in "".join(redraws).split("\r\x1b[K") if f]
    assert len(frames) > 3
    assert all(len(f) <= 79 for f in frames), max(frames, key=len)
    assert any(f.endswith("…") for f in frames)  # the full line is wider: it was cut, not wrapped
    assert "\n" not in "".join(frames)
    assert 'inferenceservice "a-rather-long-inferenceservice-name" rolled out' in last


# --------------------------------------------------------------------------- rollout get


def test_rollout_get_draws_revisions_deployments_and_pods(kubectl, namespace, kubeconfig):
    stable = start_ready(kubectl, manifest("tree", namespace, 1, replicas=3, pause="5m"), namespace, "tree")
    stable_revision = stable["status"]["rollout"]["stableRevision"]
    kubectl("apply", "-f", "-", input=manifest("tree", namespace, 2, replicas=3, pause="5m"))
    canary = wait_for(lambda: get(kubectl, namespace, "tree")["status"]["rollout"].get("canaryRevision"), "a canary")
    wait_for(lambda: "Step 1 of 1" in get(kubectl, namespace, "tree")["status"]["rollout"].get("message", ""),
             "the canary to hold for its pause")
    base = ["rollout", "get", "tree", "-n", namespace, "--kubeconfig", str(kubeconfig), "--bridge-timeout", "0"]
    shown = tfleet(*base)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert not ANSI.search(text)  # plain off a terminal
    fields = dict(line.split(":", 1) for line in text.split("\n\n")[0].splitlines())
    assert fields["Status"].strip() == "Progressing"
    assert fields["  Step"].strip() == "1/1" and fields["  Weight"].strip() == "25%"
    assert re.fullmatch(r"\s*[45]m\d*s?", fields["  Pause left"]), fields["  Pause left"]
    assert "no metric gate" in fields["Analysis"]
    lines = text.splitlines()
    canary_at = next(i for i, line in enumerate(lines) if f"revision {canary}" in line)
    stable_at = next(i for i, line in enumerate(lines) if f"revision {stable_revision}" in line)
    assert canary_at < stable_at
    assert "canary, weight 25%" in lines[canary_at] and "Stable" in lines[stable_at]
    pods = {p["metadata"]["name"]: p for p in json.loads(kubectl("get", "pods", "-n", namespace, "-l",
                                                                 "tfleet.dev/inferenceservice=tree", "-o",
                                                                 "json").stdout)["items"]}
    for name, pod in pods.items():
        line = next(line for line in lines if f" {name} " in line)
        version = pod["metadata"]["labels"]["tfleet.dev/model-version"]
        assert line.split()[2:4] == ["Pod", pod["status"]["phase"]] or "Pod" in line
        assert f" {version} " in line
    assert any(f"tree-{canary}" in line and "Deployment" in line for line in lines)
    names = tfleet(*base, "-o", "name").stdout.splitlines()
    assert names[0] == "inferenceservice.tfleet.dev/tree"
    assert {n for n in names if n.startswith("pod/")} == {f"pod/{p}" for p in pods}
    code, screen, err = run_on_a_terminal([*base, "--watch", "--interval", "300ms"], columns=100,
                                          until=lambda out: out.count("\x1b[H\x1b[2J") >= 2)
    assert code == 0, err
    assert "\x1b[32m" in screen or "\x1b[33m" in screen  # colour on a terminal
    assert all(len(ANSI.sub("", line)) <= 99 for line in screen.replace("\x1b[H\x1b[2J", "\n").split("\r\n"))


# --------------------------------------------------------------------------- predict


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandIn]:
    base = tmp_path / "models" / "m"
    write_version(base, 1, {"function": {"linear": {"a": 0.5, "b": 2}}})
    server = StandIn(tmp_path / "standin", ["--model_name=m", f"--model_base_path={base}"])
    try:
        yield server.wait_serving()
    finally:
        server.stop()


@pytest.mark.simulated  # the pod is pointed at a stand-in this test runs on 127.0.0.1
def test_predict_reaches_a_pod_over_rest_and_grpc_and_the_tree_asks_its_bridge(kubectl, namespace, kubeconfig,
                                                                               standin):
    bridge = subprocess.Popen([sys.executable, "-m", "tfleet.cli", "health-bridge", "--target",
                               f"127.0.0.1:{standin.grpc_port}", "--model", "m", "--listen", "127.0.0.1",
                               "--port", "8510", "--http-port", "8511", "--interval", "200ms"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONPATH": PYTHONPATH})
    try:
        text = yaml.safe_load(manifest("served", namespace, 1, replicas=1, pause="1s"))
        text["spec"]["model"]["name"] = "m"
        text["spec"]["server"] = {"grpcPort": standin.grpc_port, "restPort": standin.rest_port}
        text["spec"]["pod"] = {"annotations": {"localcluster.tfleet.dev/pod-ip": "127.0.0.1"}}
        start_ready(kubectl, yaml.safe_dump(text), namespace, "served")
        pod = wait_for(lambda: next(iter(json.loads(kubectl(
            "get", "pods", "-n", namespace, "-l", "tfleet.dev/inferenceservice=served", "-o", "json").stdout)["items"]),
            None), "a pod")["metadata"]["name"]
        common = ["-n", namespace, "--kubeconfig", str(kubeconfig), "--instances", "[[1.0, 2.0], [3.0, 4.0]]"]
        for protocol in ("rest", "grpc"):
            answer = tfleet("predict", f"pod/{pod}", "--protocol", protocol, *common)
            assert answer.returncode == 0, answer.stderr
            assert json.loads(answer.stdout) == {"predictions": [[2.5, 3.0], [3.5, 4.0]]}
        body = tfleet("predict", f"pod/{pod}", "-n", namespace, "--kubeconfig", str(kubeconfig), "--protocol", "grpc",
                      "-f", str(write_json(standin.workdir / "body.json", {"inputs": [[6.0]]})))
        assert json.loads(body.stdout) == {"outputs": [[5.0]]}, body.stderr
        load = tfleet("predict", f"pod/{pod}", *common, "--rate", "20", "--duration", "1s", "-o", "json")
        assert load.returncode == 0, load.stderr
        summary = json.loads(load.stdout)
        assert (summary["requests"], summary["succeeded"], summary["failed"]) == (20, 20, 0)
        assert 0 < summary["latencyMilliseconds"]["p50"] <= summary["latencyMilliseconds"]["p99"]
        wrong = tfleet("predict", f"pod/{pod}", "-n", namespace, "--kubeconfig", str(kubeconfig),
                       "--model-version", "9", "--instances", "[[1.0]]")
        assert wrong.returncode == exits.EXIT_FAILED
        assert "error: TF Serving answered: HTTP 404" in wrong.stderr
        def tree_with_bridge() -> str:
            shown = tfleet("rollout", "get", "served", "-n", namespace, "--kubeconfig", str(kubeconfig)).stdout
            return shown if "model AVAILABLE" in shown else ""

        tree = wait_for(tree_with_bridge, "the tree to show the bridge's view")
        assert re.search(rf"{pod}\s+Pod\s+\S+\s+1\s+.*model AVAILABLE", tree), tree
    finally:
        bridge.kill()
        bridge.wait()


def write_json(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_predict_outside_the_cluster_names_the_address_and_suggests_a_port_forward(kubectl, namespace,
                                                                                   kubeconfig, tmp_path):
    start_ready(kubectl, manifest("outside", namespace, 1, replicas=1), namespace, "outside")
    # Outside a cluster its DNS names do not resolve. The command runs with a resolver on
    # 127.0.0.1, where nothing answers, so no lookup leaves the machine.
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")
    for protocol, port in (("rest", 8501), ("grpc", 8500)):
        command = (f"mount --bind {resolv} /etc/resolv.conf && exec {sys.executable} -m tfleet.cli predict "
                   f"tfis/outside -n {namespace} --kubeconfig {kubeconfig} --protocol {protocol} "
                   "--instances '[[1.0]]' --timeout 5s")
        result = subprocess.run(["unshare", "-m", "sh", "-c", command], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "PYTHONPATH": PYTHONPATH})
        assert result.returncode == exits.EXIT_UNREACHABLE, result.stderr
        where = f"http://outside.{namespace}.svc:{port}" if protocol == "rest" else f"outside.{namespace}.svc:{port}"
        assert result.stderr.startswith(f"error: cannot reach {where}: cannot resolve the host name\n"), result.stderr
        assert f"kubectl port-forward -n {namespace} svc/outside {port}:{port}" in result.stderr
        assert f"tfleet predict --address localhost:{port} --model outside" in result.stderr
        assert "Traceback" not in result.stderr


def test_predict_to_an_address_with_a_load(standin):
    address = f"127.0.0.1:{standin.rest_port}"
    load = tfleet("predict", "--address", address, "--model", "m", "--instances", "[[1.0]]", "--rate", "40",
                  "--duration", "500ms")
    assert load.returncode == 0, load.stderr
    first, second = load.stdout.splitlines()[:2]
    assert re.match(r"requests:  20 in \S+ \(\S+/s\), 20 succeeded, 0 failed$", first), first
    assert re.match(r"latency:   p50 \S+ms   p90 \S+ms   p99 \S+ms   max \S+ms$", second), second
    down = tfleet("predict", "--address", f"127.0.0.1:{free_port()}", "--model", "m", "--instances", "[[1.0]]")
    assert down.returncode == exits.EXIT_UNREACHABLE
    assert "connection refused" in down.stderr.splitlines()[0]
    wait_until(lambda: standin.proc.poll() is None, "the stand-in to keep running")
