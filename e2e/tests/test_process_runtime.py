"""The process runtime of the local cluster's kubelet: pods that really run.

One cluster for the module, every node labelled ``localcluster.tfleet.dev/runtime:
process``, with tiny images of its own (Python one-liners run by this interpreter). After
the cluster stops, nothing may be left behind: no network namespace, no veth, no process,
no state directory.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e.localcluster.controllers.process import RUNTIME_LABEL, sandbox
from e2e.localcluster.fixtures import KUBECTL, RunningCluster

pytestmark = pytest.mark.simulated

if sandbox.missing_host_support():
    pytest.fail(f"the process runtime cannot run here: {sandbox.missing_host_support()}",
                pytrace=False)

PY = sys.executable

WEB = r'''
import http.server, os, signal, sys
ready = [True]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/toggle":
            ready[0] = not ready[0]; code = 200
        elif self.path == "/ready":
            code = 200 if ready[0] else 503
        elif self.path == "/header":
            code = 200 if self.headers.get("X-Probe") == "yes" else 400
        elif self.path == "/fail":
            code = 503
        else:
            code = 200
        body = os.environ.get("MSG", "hello").encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
if os.environ.get("ON_SIGTERM"):
    def bye(*args):
        with open(os.environ["ON_SIGTERM"], "a") as f:
            f.write(os.environ.get("WHO", "sigterm") + "\n")
        sys.exit(0)
    signal.signal(signal.SIGTERM, bye)
print("listening on", os.environ.get("PORT", "8080"), flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), H).serve_forever()
'''

GRPC = r'''
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
server = grpc.server(futures.ThreadPoolExecutor(2))
servicer = health.HealthServicer()
servicer.set("", health_pb2.HealthCheckResponse.SERVING)
servicer.set("bad", health_pb2.HealthCheckResponse.NOT_SERVING)
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
server.add_insecure_port("0.0.0.0:9090")
server.start()
server.wait_for_termination()
'''

IMAGES = {
    # ENTRYPOINT python -c, CMD: sleep for an hour.
    "localcluster.test/python": {"entrypoint": [PY, "-u", "-c"],
                                 "cmd": ["import time; time.sleep(3600)"]},
    "localcluster.test/web": {"entrypoint": [PY, "-u", "/opt/localcluster-test/web.py"],
                              "files": {"/opt/localcluster-test/web.py": [WEB, 0o644]},
                              "env": {"IMAGE_VAR": "from-image"}},
    "localcluster.test/grpc": {"entrypoint": [PY, "-u", "/opt/localcluster-test/health_server.py"],
                               "files": {"/opt/localcluster-test/health_server.py": [GRPC, 0o644]}},
}

# TF Serving's place taken by the fake that speaks its gRPC API (tests/fakes/tfserving).
REPO = Path(__file__).resolve().parents[2]
IMAGES["localcluster.test/fake-tfserving"] = {
    "entrypoint": [PY, "-u", "-m", "tests.fakes.tfserving", "--host", "0.0.0.0", "--port", "8500"],
    "env": {"PYTHONPATH": f"{REPO}:{REPO / 'operator'}"},
}

BACKOFF_SCALE = 0.05  # back-off 0.5 s doubling to 15 s


@dataclass
class Env:
    rc: RunningCluster
    kubeconfig: Path
    storage: Path
    ns: str = ""

    def call(self, coro: Any) -> Any:
        return self.rc.call(coro)

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        resource = {"Pod": "v1/pods", "ConfigMap": "v1/configmaps", "Secret": "v1/secrets",
                    "Service": "v1/services",
                    "PersistentVolumeClaim": "v1/persistentvolumeclaims"}[obj["kind"]]
        obj = {"apiVersion": "v1", **obj}
        obj["metadata"] = {"namespace": self.ns, **obj["metadata"]}
        return self.call(self.rc.cluster.create(resource, obj))

    def pod(self, name: str) -> dict[str, Any] | None:
        try:
            return self.call(self.rc.cluster.get("v1/pods", self.ns, name))
        except Exception as exc:
            if getattr(exc, "code", None) == 404:
                return None
            raise

    def delete(self, name: str) -> None:
        self.call(self.rc.cluster.delete("v1/pods", self.ns, name))

    def events(self, name: str) -> list[dict[str, Any]]:
        items = self.call(self.rc.cluster.list("v1/events", namespace=self.ns))
        return [e for e in items if (e.get("involvedObject") or {}).get("name") == name]

    def describe(self, name: str) -> str:
        pod = self.pod(name) or {}
        statuses = [(s["name"], s.get("ready"), s.get("restartCount"), s.get("state"))
                    for s in (pod.get("status") or {}).get("containerStatuses") or []]
        events = [(e["reason"], e["message"]) for e in self.events(name)]
        previous = {s[0]: self.kubectl("logs", name, "-c", s[0], "--previous", "--tail=5",
                                       check=False).stdout for s in statuses if s[2]}
        return f"pod {name}: {statuses}; events: {events}; previous logs: {previous}"

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        binary = KUBECTL if KUBECTL.exists() else shutil.which("kubectl")
        assert binary, f"kubectl is needed: {KUBECTL} is missing and none is on PATH (make tools)"
        return subprocess.run([str(binary), "--kubeconfig", str(self.kubeconfig), "-n", self.ns, *args],
                              capture_output=True, text=True, check=check, timeout=30)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1,
             detail: Callable[[], Any] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}"
                         + (f"; {detail()}" if detail else ""))


def status_of(pod: dict[str, Any] | None, container: str) -> dict[str, Any]:
    st = (pod or {}).get("status") or {}
    for s in (st.get("containerStatuses") or []) + (st.get("initContainerStatuses") or []):
        if s["name"] == container:
            return s
    return {}


def condition(pod: dict[str, Any] | None, kind: str) -> str | None:
    for c in ((pod or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return c["status"]
    return None


def pod_manifest(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"terminationGracePeriodSeconds": 2, "containers": containers, **spec}}


def leftovers(prefix: str, state_dir: Path) -> dict[str, Any]:
    procs = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(state_dir).encode() in (entry / "cmdline").read_bytes():
                    procs.append(entry.name)
            except OSError:
                pass
    return {"netns": sandbox.list_netns(prefix), "links": sandbox.list_links(prefix),
            "processes": procs, "state_dir": state_dir.exists()}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("process-runtime")
    storage = tmp / "storage"
    rc = RunningCluster(tmp / "kubeconfig", controller_options={
        "process_runtime": True,
        "backoff_scale": BACKOFF_SCALE,
        "storage_root": str(storage),
        "images": IMAGES,
        "topology": {"nodes": [{"name": "node", "count": 2,
                                "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}}]},
    }).start()
    runtime = rc.cluster.pod_log_source
    prefix, state_dir = runtime.prefix, runtime.state_dir
    try:
        yield Env(rc, tmp / "kubeconfig", storage)
    finally:
        rc.stop()
    assert leftovers(prefix, state_dir) == {"netns": [], "links": [], "processes": [],
                                            "state_dir": False}


@pytest.fixture
def env(cluster: Env) -> Env:
    cluster.ns = f"pr-{uuid.uuid4().hex[:8]}"
    cluster.call(cluster.rc.cluster.create(
        "v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": cluster.ns}}))
    return cluster


def web(name: str = "web", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "localcluster.test/web:1",
            "ports": [{"name": "http", "containerPort": 8080}], **extra}


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(url: str) -> tuple[int, str]:
    try:
        with _DIRECT.open(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError as exc:
        return 0, str(exc.reason)


# ---------------------------------------------------------------------------- tests


def test_nodes_are_labelled_for_the_process_runtime(env: Env) -> None:
    nodes = env.call(env.rc.cluster.list("v1/nodes"))
    assert {n["metadata"]["labels"][RUNTIME_LABEL] for n in nodes} == {"process"}


def test_containers_share_the_pod_network_and_the_host_reaches_pod_ips(env: Env) -> None:
    client = {"name": "client", "image": "localcluster.test/python:1",
              "args": ["import time, urllib.request\n"
                       "for _ in range(100):\n"
                       "    try:\n"
                       "        print(urllib.request.urlopen('http://localhost:8080/').read().decode(), flush=True); break\n"
                       "    except OSError: time.sleep(0.1)\n"
                       "time.sleep(3600)"]}
    for name in ("one", "two"):
        env.create(pod_manifest(name, [web(env=[{"name": "MSG", "value": f"hello from {name}"}]),
                                       client]))
    pods = {name: wait_for(f"pod {name} Ready", lambda name=name: (
        p := env.pod(name)) and condition(p, "Ready") == "True" and p) for name in ("one", "two")}
    ips = {name: p["status"]["podIP"] for name, p in pods.items()}
    assert ips["one"] != ips["two"]
    for name, ip in ips.items():
        assert ip.startswith("10.244.")
        # Both bind 0.0.0.0:8080; no readiness probe, so Ready may come before the bind.
        wait_for(f"{name} answering at {ip}:8080",
                 lambda ip=ip, name=name: http(f"http://{ip}:8080/") == (200, f"hello from {name}"))
        wait_for(f"the client of {name} reaching localhost:8080",
                 lambda name=name: f"hello from {name}" in env.kubectl("logs", name, "-c", "client").stdout)


def test_an_unknown_image_fails_to_pull_with_back_off(env: Env) -> None:
    env.create(pod_manifest("nopull", [{"name": "c", "image": "example.com/nothing:1"}]))
    seen: dict[str, str] = {}

    def both() -> bool:
        waiting = (status_of(env.pod("nopull"), "c").get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            seen[waiting["reason"]] = waiting.get("message", "")
        return {"ErrImagePull", "ImagePullBackOff"} <= set(seen)

    wait_for("ErrImagePull and then ImagePullBackOff", both, interval=0.02)
    assert "does not know image example.com/nothing" in seen["ErrImagePull"]
    assert seen["ImagePullBackOff"] == 'Back-off pulling image "example.com/nothing:1"'
    pod = env.pod("nopull")
    assert pod["status"]["phase"] == "Pending"
    reasons = {e["reason"] for e in env.events("nopull")}
    assert {"Failed", "BackOff"} <= reasons
    logs = env.kubectl("logs", "nopull", check=False)
    assert "is waiting to start" in logs.stderr


INSPECT = r'''
import json, os
def read(p):
    try:
        return open(p).read()
    except OSError as exc:
        return f"error: {exc.strerror}"
def write(p):
    try:
        open(p, "w").write("x"); return "ok"
    except OSError as exc:
        return f"error: {exc.strerror}"
print(json.dumps({
    "env": {k: v for k, v in os.environ.items() if k.startswith(("E_", "CM_", "IMAGE_"))},
    "argv": os.sys.argv[1:],
    "config_a": read("/etc/app/a.conf"), "config_mode": oct(os.stat("/etc/app/a.conf").st_mode & 0o777),
    "config_b_absent": not os.path.exists("/etc/app/b"),
    "secret": read("/etc/secret/token"),
    "model": read("/models/m/1/saved_model.pb"),
    "shared": read("/shared/from-init"),
    "sub": read("/sub/file"),
    "write_config": write("/etc/app/new"),
    "write_claim_ro": write("/models/new"),
    "write_root": write("/var/tmp/localcluster-ro-probe"),
    "write_tmp": write("/tmp/scratch"),
    "hostname": os.uname().nodename,
    "pid": os.getpid(),
}), flush=True)
import time; time.sleep(3600)
'''


def test_volumes_env_and_expansion(env: Env) -> None:
    claim_dir = env.storage / "volumes" / env.ns / "models"
    (claim_dir / "m" / "1").mkdir(parents=True)
    (claim_dir / "m" / "1" / "saved_model.pb").write_text("model bytes")
    env.create({"kind": "PersistentVolumeClaim", "metadata": {"name": "models"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    env.create({"kind": "ConfigMap", "metadata": {"name": "cfg"},
                "data": {"a": "alpha", "b": "beta", "greeting": "hi"}})
    env.create({"kind": "Secret", "metadata": {"name": "sec"}, "stringData": {"token": "s3cret"}})
    main = {
        "name": "main", "image": "localcluster.test/python:1",
        "command": [PY, "-u", "-c", INSPECT, "$(E_NAME)", "$$(E_NAME)", "$(E_MISSING)"],
        "env": [
            {"name": "E_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "E_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "E_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "E_REF", "value": "$(E_NAME).$(E_NS) $$(E_NAME) $(E_LATER)"},
            {"name": "E_LATER", "value": "later"},
            {"name": "E_CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
            {"name": "E_SECRET", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
            {"name": "IMAGE_VAR", "value": "overridden"},
        ],
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CM_"}],
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/app"},
            {"name": "secret", "mountPath": "/etc/secret"},
            {"name": "models", "mountPath": "/models", "readOnly": True},
            {"name": "shared", "mountPath": "/shared"},
            {"name": "shared", "mountPath": "/sub", "subPath": "dir"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": {"readOnlyRootFilesystem": True},
    }
    init = {"name": "fill", "image": "localcluster.test/python:1",
            "args": ["import os; open('/shared/from-init', 'w').write('made by init');"
                     "os.makedirs('/shared/dir', exist_ok=True); open('/shared/dir/file', 'w').write('sub')"],
            "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}
    env.create(pod_manifest("inspect", [main], initContainers=[init], volumes=[
        {"name": "config", "configMap": {"name": "cfg", "items": [{"key": "a", "path": "a.conf"}],
                                         "defaultMode": 0o640}},
        {"name": "secret", "secret": {"secretName": "sec"}},
        {"name": "models", "persistentVolumeClaim": {"claimName": "models"}},
        {"name": "shared", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]))
    line = wait_for("the inspector's report", lambda: next(
        (ln for ln in env.kubectl("logs", "inspect", "-c", "main", check=False).stdout.splitlines()
         if ln.startswith("{")), None))
    report = json.loads(line)
    pod = env.pod("inspect")
    name, ns, ip = "inspect", env.ns, pod["status"]["podIP"]
    assert report["argv"] == [name, "$(E_NAME)", "$(E_MISSING)"]
    assert report["env"] == {
        "E_NAME": name, "E_NS": ns, "E_IP": ip,
        "E_REF": f"{name}.{ns} $(E_NAME) $(E_LATER)",  # only earlier vars expand
        "E_LATER": "later", "E_CM": "hi", "E_SECRET": "s3cret",
        "CM_a": "alpha", "CM_b": "beta", "CM_greeting": "hi",
        "IMAGE_VAR": "overridden",
    }
    assert report["config_a"] == "alpha" and report["config_mode"] == "0o640"
    assert report["config_b_absent"]
    assert report["secret"] == "s3cret"
    assert report["model"] == "model bytes"
    assert report["shared"] == "made by init" and report["sub"] == "sub"
    assert report["write_config"] == "error: Read-only file system"
    assert report["write_claim_ro"] == "error: Read-only file system"
    assert report["write_root"] == "error: Read-only file system"
    assert report["write_tmp"] == "ok"
    assert report["hostname"] == name
    assert report["pid"] == 1
    init_status = status_of(pod, "fill")
    assert init_status["state"]["terminated"]["reason"] == "Completed"
    assert condition(pod, "Initialized") == "True"


def test_a_missing_config_map_is_a_create_container_config_error(env: Env) -> None:
    env.create(pod_manifest("needcm", [{
        "name": "c", "image": "localcluster.test/python:1",
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "k"}}}]}]))
    waiting = wait_for("CreateContainerConfigError", lambda: (
        (status_of(env.pod("needcm"), "c").get("state") or {}).get("waiting") or {}).get(
        "reason") == "CreateContainerConfigError" and status_of(env.pod("needcm"), "c"))
    assert waiting["state"]["waiting"]["message"] == 'configmap "later" not found'
    env.create({"kind": "ConfigMap", "metadata": {"name": "later"}, "data": {"k": "v"}})
    wait_for("the container running once the ConfigMap exists",
             lambda: "running" in (status_of(env.pod("needcm"), "c").get("state") or {}))


ORDER = "import sys, time\nopen('/shared/order', 'a').write(sys.argv[1] + ' ' + repr(time.time()) + '\\n')\n"


def test_init_containers_and_native_sidecars_start_in_order(env: Env) -> None:
    mount = [{"name": "shared", "mountPath": "/shared"}]
    record = lambda who, then: {"args": [ORDER + then, who]}  # noqa: E731
    sidecar = {"name": "sidecar", "image": "localcluster.test/python:1", "restartPolicy": "Always",
               **record("sidecar", "time.sleep(1); open('/shared/sidecar-up', 'w').write('up'); time.sleep(3600)"),
               "startupProbe": {"exec": {"command": ["test", "-f", "/shared/sidecar-up"]},
                                "periodSeconds": 1, "failureThreshold": 30},
               "volumeMounts": mount}
    env.create(pod_manifest("ordered", [
        {"name": "main", "image": "localcluster.test/python:1",
         **record("main", "import os; print('sidecar up:', os.path.exists('/shared/sidecar-up'));"
                          " print(open('/shared/order').read(), flush=True); time.sleep(3600)"), "volumeMounts": mount}],
        initContainers=[
            {"name": "first", "image": "localcluster.test/python:1", **record("first", ""), "volumeMounts": mount},
            sidecar,
            {"name": "second", "image": "localcluster.test/python:1", **record("second", ""), "volumeMounts": mount},
        ],
        volumes=[{"name": "shared", "emptyDir": {}}]))
    pod = wait_for("the ordered pod Ready", lambda: (p := env.pod("ordered")) and condition(p, "Ready") == "True" and p)
    # Ready once main runs; its first line may come a moment later on a loaded machine.
    wait_for("main's log line", lambda: "sidecar up: True" in env.kubectl("logs", "ordered", "-c", "main").stdout)
    for name in ("first", "second"):
        assert status_of(pod, name)["state"]["terminated"]["reason"] == "Completed"
    side = status_of(pod, "sidecar")
    assert "running" in side["state"] and side["started"] and side["ready"]
    printed = env.kubectl("logs", "ordered", "-c", "main").stdout
    order = [ln.split()[0] for ln in printed.splitlines()
             if len(ln.split()) == 2 and ln.split()[1].replace(".", "").isdigit()]
    assert order == ["first", "sidecar", "second", "main"]


def test_each_probe_kind_gates_readiness(env: Env) -> None:
    def probe(handler: dict[str, Any]) -> dict[str, Any]:
        return {**handler, "periodSeconds": 1, "timeoutSeconds": 2, "failureThreshold": 1}

    good = [
        web("http", readinessProbe=probe({"httpGet": {"path": "/header", "port": "http",
                                                       "httpHeaders": [{"name": "X-Probe", "value": "yes"}]}})),
        web("tcp", env=[{"name": "PORT", "value": "8081"}], ports=[{"containerPort": 8081}],
            readinessProbe=probe({"tcpSocket": {"port": 8081}})),
        {"name": "grpc", "image": "localcluster.test/grpc:1", "readinessProbe": probe({"grpc": {"port": 9090}})},
        {"name": "exec", "image": "localcluster.test/python:1",
         "readinessProbe": probe({"exec": {"command": ["sh", "-c", "echo ok"]}})},
    ]
    bad = [
        web("http", readinessProbe=probe({"httpGet": {"path": "/fail", "port": 8080}})),
        {"name": "tcp", "image": "localcluster.test/python:1", "readinessProbe": probe({"tcpSocket": {"port": 8081}})},
        {"name": "grpc", "image": "localcluster.test/grpc:1",
         "readinessProbe": probe({"grpc": {"port": 9090, "service": "bad"}})},
        {"name": "exec", "image": "localcluster.test/python:1",
         "readinessProbe": probe({"exec": {"command": ["sh", "-c", "echo nope; exit 3"]}})},
    ]
    env.create(pod_manifest("good", good))
    env.create(pod_manifest("bad", bad))
    pod = wait_for("every probe of the good pod succeeding",
                   lambda: (p := env.pod("good")) and condition(p, "Ready") == "True" and p,
                   detail=lambda: env.describe("good"))
    assert all(s["ready"] for s in pod["status"]["containerStatuses"])

    def failures() -> dict[str, str]:
        out = {}
        for e in env.events("bad"):
            if e["reason"] == "Unhealthy":
                out[e["message"]] = e["type"]
        return out

    expected = [
        "Readiness probe failed: HTTP probe failed with statuscode: 503",
        "Readiness probe failed: dial tcp {ip}:8081: connect: connection refused",
        'Readiness probe failed: service unhealthy (responded with "NOT_SERVING")',
        "Readiness probe failed: nope\n",
    ]

    def all_failed() -> bool:
        p = env.pod("bad")
        ip = ((p or {}).get("status") or {}).get("podIP", "")
        return all(m.format(ip=ip) in failures() for m in expected)

    wait_for("an Unhealthy event per failing probe", all_failed)
    pod = env.pod("bad")
    assert condition(pod, "Ready") == "False"
    assert not any(s["ready"] for s in pod["status"]["containerStatuses"])
    assert pod["status"]["phase"] == "Running"


def test_status_is_written_only_when_it_changes(env: Env) -> None:
    env.create(pod_manifest("quiet", [web(readinessProbe={"httpGet": {"path": "/", "port": 8080},
                                                          "periodSeconds": 1})]))
    pod = wait_for("Ready", lambda: (p := env.pod("quiet")) and condition(p, "Ready") == "True" and p)
    version = pod["metadata"]["resourceVersion"]
    time.sleep(2.5)  # a few successful probes later
    assert env.pod("quiet")["metadata"]["resourceVersion"] == version


def test_liveness_failure_restarts_the_container(env: Env) -> None:
    env.create(pod_manifest("lively", [web(livenessProbe={
        "httpGet": {"path": "/fail", "port": 8080}, "periodSeconds": 1, "failureThreshold": 2})]))
    st = wait_for("a restart after the liveness probe failed", lambda: (
        s := status_of(env.pod("lively"), "web")) and s.get("restartCount", 0) >= 1 and s)
    last = st["lastState"]["terminated"]
    assert last["exitCode"] == 137 and last["reason"] == "Error"  # PID 1 ignored SIGTERM
    assert last["containerID"] != st.get("containerID")
    kills = [e["message"] for e in env.events("lively") if e["reason"] == "Killing"]
    assert "Container web failed liveness probe, will be restarted" in kills


def test_a_crashing_container_backs_off_and_reports_its_log_tail(env: Env) -> None:
    env.create(pod_manifest("crash", [
        {"name": "crasher", "image": "localcluster.test/python:1",
         "args": ["import sys; print('starting'); print('fatal: no model found', file=sys.stderr); sys.exit(3)"],
         "terminationMessagePolicy": "FallbackToLogsOnError"},
        web()]))
    st = wait_for("CrashLoopBackOff", lambda: (s := status_of(env.pod("crash"), "crasher")) and (
        (s.get("state") or {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff" and s)
    assert st["state"]["waiting"]["message"].startswith("back-off ")
    assert "restarting failed container=crasher pod=crash_" in st["state"]["waiting"]["message"]
    last = st["lastState"]["terminated"]
    assert last["exitCode"] == 3 and last["reason"] == "Error"
    assert last["message"] == "starting\nfatal: no model found\n"
    wait_for("restarts counted", lambda: status_of(env.pod("crash"), "crasher").get("restartCount", 0) >= 2)
    previous = env.kubectl("logs", "crash", "-c", "crasher", "--previous")
    assert previous.stdout == "starting\nfatal: no model found\n"
    stamped = env.kubectl("logs", "crash", "-c", "crasher", "--previous", "--timestamps", "--tail=1")
    assert stamped.stdout.endswith("Z fatal: no model found\n") and stamped.stdout.count("\n") == 1
    none = env.kubectl("logs", "crash", "-c", "web", "--previous", check=False)
    assert none.returncode != 0
    assert 'previous terminated container "web" in pod "crash" not found' in none.stderr
    assert "listening on 8080" in env.kubectl("logs", "crash", "-c", "web").stdout
    # without a container, the API server names the choices (kubectl would pick one itself)
    url = env.rc._lc.url + f"/api/v1/namespaces/{env.ns}/pods/crash/log"
    code, body = http(url)
    assert code == 400
    assert json.loads(body)["message"] == (
        "a container name must be specified for pod crash, choose one of: [crasher web]")


def test_termination_message_from_the_termination_log(env: Env) -> None:
    env.create(pod_manifest("done", [{
        "name": "c", "image": "localcluster.test/python:1",
        "args": ["open('/dev/termination-log', 'w').write('all done')"]}], restartPolicy="Never"))
    pod = wait_for("Succeeded", lambda: (p := env.pod("done")) and p["status"]["phase"] == "Succeeded" and p)
    term = status_of(pod, "c")["state"]["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed" and term["message"] == "all done"


def test_readiness_drives_ready_and_endpoint_slices(env: Env) -> None:
    env.create({"kind": "Service", "metadata": {"name": "flip"},
                "spec": {"selector": {"app": "flip"}, "ports": [{"port": 80, "targetPort": "http"}]}})
    env.create(pod_manifest("flip", [web(readinessProbe={
        "httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1})]))

    def endpoint_ready() -> bool | None:
        slices = env.call(env.rc.cluster.list("discovery.k8s.io/v1/endpointslices", namespace=env.ns))
        for s in slices:
            for ep in s.get("endpoints") or []:
                return bool((ep.get("conditions") or {}).get("ready"))
        return None

    pod = wait_for("Ready", lambda: (p := env.pod("flip")) and condition(p, "Ready") == "True" and p)
    wait_for("a ready endpoint", lambda: endpoint_ready() is True)
    assert http(f"http://{pod['status']['podIP']}:8080/toggle")[0] == 200
    wait_for("Ready=False", lambda: condition(env.pod("flip"), "Ready") == "False")
    pod = env.pod("flip")
    assert condition(pod, "ContainersReady") == "False"
    assert not status_of(pod, "web")["ready"]
    wait_for("the endpoint not ready", lambda: endpoint_ready() is False)
    assert http(f"http://{pod['status']['podIP']}:8080/toggle")[0] == 200
    wait_for("Ready again", lambda: condition(env.pod("flip"), "Ready") == "True")
    wait_for("the endpoint ready again", lambda: endpoint_ready() is True)


def test_prestop_then_sigterm_ignored_by_pid_1_then_sigkill_at_the_grace_period(env: Env) -> None:
    claim_dir = env.storage / "volumes" / env.ns / "marks"
    env.create({"kind": "PersistentVolumeClaim", "metadata": {"name": "marks"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    mount = [{"name": "marks", "mountPath": "/marks"}]
    env.create(pod_manifest("stubborn", [
        web(volumeMounts=mount, lifecycle={"preStop": {"exec": {
            "command": ["sh", "-c", "echo prestop >> /marks/log; sleep 1"]}}})],
        terminationGracePeriodSeconds=3,
        volumes=[{"name": "marks", "persistentVolumeClaim": {"claimName": "marks"}}]))
    env.create(pod_manifest("polite", [
        web(volumeMounts=mount, env=[{"name": "ON_SIGTERM", "value": "/marks/polite"}])],
        terminationGracePeriodSeconds=60,
        volumes=[{"name": "marks", "persistentVolumeClaim": {"claimName": "marks"}}]))
    for name in ("stubborn", "polite"):
        # Serving means the SIGTERM handler is installed (a signal before that is ignored).
        wait_for(f"{name} serving", lambda name=name: (ip := ((env.pod(name) or {}).get("status") or {})
                 .get("podIP")) and http(f"http://{ip}:8080/")[0] == 200)
    queue = env.call(_subscribe(env))
    env.delete("stubborn")
    env.delete("polite")
    # The polite one exits on SIGTERM, long before its 60 s grace period.
    wait_for("the polite pod gone", lambda: env.pod("polite") is None, timeout=20,
             detail=lambda: env.describe("polite"))
    assert (claim_dir / "polite").read_text() == "sigterm\n"
    wait_for("the stubborn pod gone", lambda: env.pod("stubborn") is None, timeout=20,
             detail=lambda: env.describe("stubborn"))
    assert (claim_dir / "log").read_text() == "prestop\n"
    final = {}
    for _event, obj in env.call(_drain(env, queue)):
        if obj["metadata"]["namespace"] == env.ns and obj.get("status", {}).get("containerStatuses"):
            final[obj["metadata"]["name"]] = status_of(obj, "web").get("state", {})
    assert final["stubborn"]["terminated"]["exitCode"] == 137  # SIGTERM ignored, SIGKILL at the end
    assert final["polite"]["terminated"]["exitCode"] == 0


async def _subscribe(env: Env) -> Any:
    return env.rc.cluster.subscribe("v1/pods")


async def _drain(env: Env, queue: Any) -> list[Any]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    env.rc.cluster.unsubscribe("v1/pods", queue)
    return out


def test_tfleet_image_runs_the_cli_from_this_checkout(env: Env) -> None:
    env.create(pod_manifest("tfleet", [{
        "name": "cli", "image": "ghcr.io/tfleet/tfleet:0.1.0", "command": ["tfleet"],
        "args": ["health-bridge", "--help"]}], restartPolicy="Never"))
    pod = wait_for("the tfleet CLI to finish", lambda: (p := env.pod("tfleet")) and p["status"]["phase"]
                   in ("Succeeded", "Failed") and p, timeout=30)
    assert pod["status"]["phase"] == "Succeeded", env.kubectl("logs", "tfleet").stdout
    assert "--target" in env.kubectl("logs", "tfleet").stdout


def test_sidecars_stop_after_the_main_containers_in_reverse_order(env: Env) -> None:
    env.create({"kind": "PersistentVolumeClaim", "metadata": {"name": "order"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    mount = [{"name": "order", "mountPath": "/order"}]

    def member(name: str, port: int, **extra: Any) -> dict[str, Any]:
        return web(name, ports=[{"containerPort": port}], volumeMounts=mount, env=[
            {"name": "PORT", "value": str(port)}, {"name": "WHO", "value": name},
            {"name": "ON_SIGTERM", "value": "/order/log"}], **extra)

    env.create(pod_manifest("layered", [
        member("main", 8080, lifecycle={"preStop": {"sleep": {"seconds": 1}}})],
        initContainers=[member("side-1", 8081, restartPolicy="Always"),
                        member("side-2", 8082, restartPolicy="Always")],
        terminationGracePeriodSeconds=30,
        volumes=[{"name": "order", "persistentVolumeClaim": {"claimName": "order"}}]))
    def serving() -> bool:
        ip = ((env.pod("layered") or {}).get("status") or {}).get("podIP")
        return bool(ip) and all(http(f"http://{ip}:{port}/")[0] == 200 for port in (8080, 8081, 8082))

    wait_for("every container serving", serving)
    env.delete("layered")
    wait_for("the layered pod gone", lambda: env.pod("layered") is None,
             detail=lambda: env.describe("layered"))
    log = env.storage / "volumes" / env.ns / "order" / "log"
    assert log.read_text().split() == ["main", "side-2", "side-1"]


def test_a_pod_that_completes_stops_its_sidecar_and_follows_its_log(env: Env) -> None:
    env.create(pod_manifest("job", [{
        "name": "work", "image": "localcluster.test/python:1",
        "args": ["import time\nfor i in range(5):\n    print('step', i, flush=True); time.sleep(0.2)"]}],
        restartPolicy="Never",
        initContainers=[{"name": "helper", "image": "localcluster.test/python:1", "restartPolicy": "Always"}]))
    wait_for("work running", lambda: "running" in (status_of(env.pod("job"), "work").get("state") or {}))
    followed = env.kubectl("logs", "-f", "job", "-c", "work")  # returns when the container exits
    assert followed.stdout == "".join(f"step {i}\n" for i in range(5))
    pod = wait_for("Succeeded", lambda: (p := env.pod("job")) and p["status"]["phase"] == "Succeeded" and p,
                   detail=lambda: env.describe("job"))
    helper = status_of(pod, "helper")
    assert "terminated" in helper["state"], helper
    assert condition(pod, "Ready") == "False"


def test_the_real_health_bridge_runs_as_a_native_sidecar(env: Env) -> None:
    from tfleet.health import podspec

    bridge = podspec.bridge_container(image="ghcr.io/tfleet/tfleet:0.1.0", model_name="m",
                                      version=1, grpc_port=8500, drain_seconds=1)
    serving = {"name": "tensorflow-serving", "image": "localcluster.test/fake-tfserving:1",
               "args": ["--model", "m"],
               **podspec.serving_probes(model_load_timeout_seconds=60),
               "lifecycle": podspec.serving_lifecycle(drain_seconds=1),
               "securityContext": {"readOnlyRootFilesystem": True}}
    env.create(pod_manifest("served", [serving], initContainers=[bridge],
                            terminationGracePeriodSeconds=podspec.termination_grace_seconds(1)))
    pod = wait_for("the serving pod Ready through the bridge's gRPC probes",
                   lambda: (p := env.pod("served")) and condition(p, "Ready") == "True" and p,
                   timeout=30, detail=lambda: env.describe("served"))
    assert status_of(pod, "health-bridge")["ready"]
    assert status_of(pod, "tensorflow-serving")["started"]
    env.delete("served")
    wait_for("the serving pod gone after its drain", lambda: env.pod("served") is None,
             timeout=30, detail=lambda: env.describe("served"))
    failed_hooks = [e for e in env.events("served") if e["reason"] == "FailedPreStopHook"]
    assert failed_hooks == []
