"""The operator runtime's pure parts: metrics, JSON logs, leader election decisions, health."""

from __future__ import annotations

import io
import json
import logging
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.test_fleet import RecordingKube
from tests.test_fleet import isvc as fleet_isvc
from tfleet.api.vocabulary import ConditionType
from tfleet.runtime import kube, logs, metrics
from tfleet.runtime.fleet import Fleet
from tfleet.runtime.kube import KubeError
from tfleet.runtime.leader import Action, LeaderElector, Timing, lease_record, micro_time, plan
from tfleet.runtime.operator_health import Health, Phase, State, assess


def isvc(name: str, namespace: str = "ml", phase: str | None = None, **conditions: str) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [{"type": t, "status": s} for t, s in conditions.items()]}
    if phase:
        status["rollout"] = {"phase": phase}
    return {"metadata": {"name": name, "namespace": namespace}, "status": status}


def sample(m: metrics.Metrics, name: str, /, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


# ---------------------------------------------------------------- metrics


def test_a_rollback_is_counted_once_when_the_phase_becomes_rolled_back():
    m = metrics.Metrics()
    m.observe_isvc("ADDED", isvc("a", phase="Progressing"))
    m.observe_isvc("MODIFIED", isvc("a", phase="RolledBack"))
    m.observe_isvc("MODIFIED", isvc("a", phase="RolledBack"))
    assert sample(m, "tfleet_rollbacks_total") == 1


def test_an_object_first_seen_rolled_back_is_not_a_new_rollback():
    m = metrics.Metrics()
    m.observe_isvc("LISTED", isvc("a", phase="RolledBack"))
    assert sample(m, "tfleet_rollbacks_total") == 0
    assert sample(m, "tfleet_rollouts", namespace="ml", name="a", phase="RolledBack") == 1


@pytest.mark.parametrize(("previous", "current", "expected"), [
    (None, "RolledBack", False),
    ("Progressing", "RolledBack", True),
    ("Idle", "RolledBack", True),
    ("RolledBack", "RolledBack", False),
    ("Progressing", "Idle", False),
])
def test_is_rollback(previous, current, expected):
    before = None if previous is None else metrics.Summary({}, previous)
    assert metrics.is_rollback(before, metrics.Summary({}, current)) is expected


def series(m: metrics.Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of one metric, by its labels."""
    return {tuple(sorted(s.labels.items())): s.value for family in m.registry.collect() for s in family.samples
            if s.name == name}


def test_inference_service_gauges_name_each_object_and_are_forgotten_when_it_is_deleted():
    m = metrics.Metrics()
    m.observe_isvc("ADDED", isvc("a", phase="Idle", Ready="True", Degraded="False"))
    m.observe_isvc("ADDED", isvc("b", phase="Progressing", Ready="False", Degraded="False"))
    m.observe_isvc("ADDED", isvc("c", namespace="other", Ready="False", Degraded="True"))
    # An alert on Degraded can say which InferenceService it is.
    degraded = {labels: v for labels, v in series(m, "tfleet_inferenceservices").items()
                if ("condition", "Degraded") in labels and ("status", "True") in labels}
    assert degraded == {(("condition", "Degraded"), ("name", "c"), ("namespace", "other"), ("status", "True")): 1}
    assert sample(m, "tfleet_inferenceservices", namespace="ml", name="a", condition="Ready", status="True") == 1
    assert sample(m, "tfleet_rollouts", namespace="ml", name="b", phase="Progressing") == 1
    # sum() still counts objects.
    ready_false = [v for labels, v in series(m, "tfleet_inferenceservices").items()
                   if ("condition", "Ready") in labels and ("status", "False") in labels]
    assert sum(ready_false) == 2
    # A status change moves the object's series; deleting it drops them.
    m.observe_isvc("MODIFIED", isvc("b", phase="Succeeded", Ready="True", Degraded="False"))
    assert sample(m, "tfleet_inferenceservices", namespace="ml", name="b", condition="Ready", status="False") is None
    assert sample(m, "tfleet_rollouts", namespace="ml", name="b", phase="Progressing") is None
    m.observe_isvc("DELETED", isvc("b"))
    assert not [labels for labels in series(m, "tfleet_inferenceservices") if ("name", "b") in labels]
    assert not [labels for labels in series(m, "tfleet_rollouts") if ("name", "b") in labels]


def test_an_inference_service_is_one_series_per_condition_plus_one_and_the_rest_does_not_grow():
    m = metrics.Metrics()
    kube = RecordingKube()
    fleet = hooked_fleet(m, kube)

    def count() -> dict[str, int]:
        return {family.name: len(family.samples) for family in m.registry.collect()}

    empty = count()
    kube.isvc = fleet_isvc()
    fleet.reconcile(fleet.observe_isvc("ADDED", kube.isvc))  # one, through a whole reconcile
    types = {c["type"] for c in kube.isvc["status"]["conditions"]}
    assert types == set(ConditionType)  # every condition type the operator writes
    for i in range(20):
        m.observe_isvc("ADDED", {"metadata": {"name": f"s{i}", "namespace": "ml"}, "status": kube.isvc["status"]})
    grown = count()
    per_object = {name: grown[name] - empty.get(name, 0) for name in ("tfleet_inferenceservices", "tfleet_rollouts")}
    assert per_object == {"tfleet_inferenceservices": 21 * len(ConditionType), "tfleet_rollouts": 21}
    for name in grown.keys() - per_object.keys():
        # Reconciles, writes, rollbacks, leader, build: labels from small fixed sets.
        labels = {k for family in m.registry.collect() if family.name == name for s in family.samples
                  for k in s.labels}
        assert not labels & {"namespace", "name"}, name


class ObjectsLogged(logging.Handler):
    """The object each tfleet log record names, as the formatters see it."""

    def __init__(self) -> None:
        super().__init__()
        self.objects: list[tuple[str | None, str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("tfleet"):
            self.objects.append(logs.object_ref(record))


def hooked_fleet(m: metrics.Metrics, kube: RecordingKube) -> Fleet:
    return Fleet(kube, schedule=lambda d, fn: None, status_coalesce_seconds=0,  # type: ignore[arg-type]
                 hooks=m.fleet_hooks())


@pytest.mark.parametrize(("fail", "result"), [
    (None, "success"),
    (KubeError(409, "Conflict", "stale"), "retry"),
    (KubeError(0, "Unreachable", "refused"), "retry"),
    (KubeError(500, "InternalError", "boom"), "retry"),
])
def test_reconciles_are_timed_and_counted_by_result_through_the_fleet_hooks(fail, result):
    m = metrics.Metrics()
    kube = RecordingKube()
    kube.fail_next_apply = fail
    fleet = hooked_fleet(m, kube)
    kube.isvc = fleet_isvc()
    handler = ObjectsLogged()
    tfleet_logger = logging.getLogger("tfleet")
    level = tfleet_logger.level
    tfleet_logger.addHandler(handler)
    tfleet_logger.setLevel(logging.INFO)
    try:
        fleet.reconcile(fleet.observe_isvc("ADDED", kube.isvc))
    finally:
        tfleet_logger.removeHandler(handler)
        tfleet_logger.setLevel(level)
    assert sample(m, "tfleet_reconciles_total", result=result) == 1
    assert sample(m, "tfleet_reconcile_duration_seconds_count") == 1
    # Every line written during the reconcile names the object.
    assert handler.objects and set(handler.objects) == {("ml", "resnet")}


def test_a_bug_in_a_reconcile_is_counted_as_an_error():
    m = metrics.Metrics()
    kube = RecordingKube()
    fleet = hooked_fleet(m, kube)
    kube.isvc = fleet_isvc()
    key = fleet.observe_isvc("ADDED", kube.isvc)
    kube.apply = lambda manifest: 1 / 0  # type: ignore[method-assign]
    with pytest.raises(ZeroDivisionError):
        fleet.reconcile(key)
    assert sample(m, "tfleet_reconciles_total", result="error") == 1


def test_the_fleet_feeds_observed_bodies_and_its_own_status_writes_to_the_gauges():
    m = metrics.Metrics()
    kube = RecordingKube()
    fleet = hooked_fleet(m, kube)
    assert fleet.observe_isvc("PATCHED", isvc("a", Ready="True")) == ("ml", "a")
    assert sample(m, "tfleet_inferenceservices", namespace="ml", name="a", condition="Ready", status="True") == 1
    kube.isvc = fleet_isvc()
    fleet.reconcile(fleet.observe_isvc("ADDED", kube.isvc))
    # The status the reconcile wrote (Ready=False: no pod is ready) reached the gauges.
    assert sample(m, "tfleet_inferenceservices", namespace="ml", name="resnet", condition="Ready",
                  status="False") == 1


def test_api_writes_are_counted_by_verb_and_kind_through_the_write_observer():
    m = metrics.Metrics()
    k = kube.Kube.__new__(kube.Kube)  # only the write counter is exercised
    k._lock, k.writes, k.on_write = threading.Lock(), __import__("collections").Counter(), m.record_write
    k._count("apply", "Deployment")
    k._count("apply", "Deployment")
    k._count("patch", "InferenceService/status")
    k.on_write = None
    k._count("apply", "Deployment")  # no longer observed
    assert sample(m, "tfleet_api_writes_total", verb="apply", kind="Deployment") == 2
    assert sample(m, "tfleet_api_writes_total", verb="patch", kind="InferenceService/status") == 1
    assert k.writes[("apply", "Deployment")] == 3


def test_the_metrics_endpoint_serves_the_text_format():
    m = metrics.Metrics()
    m.leader.set(1)
    stop = m.serve(0, addr="127.0.0.1")
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{m.port}/metrics", timeout=5).read().decode()
    finally:
        stop()
    assert "tfleet_leader 1.0" in text
    assert 'tfleet_build_info{version="' in text
    assert 'tfleet_reconciles_total{result="success"} 0.0' in text
    assert text.splitlines()[0].startswith("# HELP")


# ---------------------------------------------------------------- logs


def emit(fmt: str, fn: Any) -> list[str]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.configure(fmt, "info", stream)
        fn()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    return stream.getvalue().splitlines()


def test_json_lines_name_the_object_being_reconciled():
    def work() -> None:
        with logs.object_context("ml", "resnet"):
            logging.getLogger("tfleet.fleet").info("Updated status of InferenceService %s/%s", "ml", "resnet")
        logging.getLogger("tfleet.run").warning("Serving metrics on port %d", 8080)

    first, second = (json.loads(line) for line in emit("json", work))
    assert first["msg"] == "Updated status of InferenceService ml/resnet"
    assert (first["namespace"], first["name"], first["level"], first["logger"]) == ("ml", "resnet", "info", "tfleet.fleet")
    assert first["time"].endswith("Z")
    assert "namespace" not in second and second["level"] == "warning"


def test_json_lines_take_the_object_from_kopf_records_and_carry_tracebacks():
    def work() -> None:
        logging.getLogger("kopf.objects").error("Handler failed", extra={"k8s_ref": {"namespace": "ns", "name": "x"}})
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("tfleet").exception("Failed")

    kopf_line, error_line = (json.loads(line) for line in emit("json", work))
    assert (kopf_line["namespace"], kopf_line["name"]) == ("ns", "x")
    assert "ValueError: boom" in error_line["error"]


def test_text_lines_show_the_object_in_brackets():
    def work() -> None:
        with logs.object_context("ml", "resnet"):
            logging.getLogger("tfleet.fleet").info("Created Deployment resnet")

    (line,) = emit("text", work)
    assert line.endswith("INFO tfleet.fleet: [ml/resnet] Created Deployment resnet")


def test_the_object_context_is_per_thread():
    seen: list[tuple[str | None, str | None]] = []
    record = logging.LogRecord("t", logging.INFO, "", 0, "m", None, None)
    with logs.object_context("ml", "a"):
        t = threading.Thread(target=lambda: seen.append(logs.object_ref(record)))
        t.start()
        t.join()
        seen.append(logs.object_ref(record))
    assert seen == [(None, None), ("ml", "a")]


# ---------------------------------------------------------------- leader election (pure)


def lease(holder: str | None, duration: int = 15, renew: str = "t0", transitions: int = 0) -> dict[str, Any]:
    spec: dict[str, Any] = {"leaseDurationSeconds": duration, "renewTime": renew, "leaseTransitions": transitions}
    if holder:
        spec["holderIdentity"] = holder
    return {"metadata": {"name": "l", "namespace": "ns", "resourceVersion": "7"}, "spec": spec}


@pytest.mark.parametrize(("current", "observed_at", "now", "expected"), [
    (None, 0, 0, Action.CREATE),
    (lease("me"), 0, 100, Action.RENEW),
    (lease(None), 0, 0, Action.ACQUIRE),
    (lease("other", duration=15), 10, 20, Action.WAIT),
    (lease("other", duration=15), 10, 25, Action.ACQUIRE),
    (lease("other", duration=15), 10, 24.9, Action.WAIT),
])
def test_plan(current, observed_at, now, expected):
    assert plan(current, "me", observed_at, now) is expected


def test_taking_over_bumps_transitions_and_keeps_the_resource_version():
    record = lease_record(lease("other", transitions=3), namespace="ns", name="l", identity="me",
                          action=Action.ACQUIRE, duration_seconds=15, wall_now=0)
    assert record["spec"]["holderIdentity"] == "me"
    assert record["spec"]["leaseTransitions"] == 4
    assert record["spec"]["acquireTime"] == record["spec"]["renewTime"] == "1970-01-01T00:00:00.000000Z"
    assert record["metadata"]["resourceVersion"] == "7"


def test_renewing_moves_only_the_renew_time():
    before = lease("me", transitions=2)
    before["spec"]["acquireTime"] = "then"
    record = lease_record(before, namespace="ns", name="l", identity="me", action=Action.RENEW,
                          duration_seconds=15, wall_now=1.5)
    assert record["spec"] == {**before["spec"], "renewTime": micro_time(1.5)}


def test_timing_must_leave_the_old_leader_time_to_stop():
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        Timing(lease_duration=10, renew_deadline=10, retry_period=2)


class LeaseStore:
    """An in-memory Lease API with the server's compare-and-swap on resourceVersion."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise KubeError(0, "Unreachable", "connection refused")

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check()
        return json.loads(json.dumps(self.lease)) if self.lease else None

    def create_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check()
        if self.lease is not None:
            raise KubeError(409, "AlreadyExists", "exists")
        return self._store(body)

    def update_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check()
        if self.lease is None or body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "the object has been modified")
        return self._store(body)

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.version)}}
        return json.loads(json.dumps(self.lease))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def candidates(store: LeaseStore, clock: Clock) -> tuple[LeaderElector, LeaderElector]:
    timing = Timing(lease_duration=15, renew_deadline=10, retry_period=2)
    return tuple(LeaderElector(store, "ns", "l", identity=name, timing=timing, clock=clock, wall=clock)  # type: ignore[arg-type, return-value]
                 for name in ("a", "b"))


def test_one_candidate_leads_and_the_other_takes_over_only_after_the_lease_expires():
    store, clock = LeaseStore(), Clock()
    a, b = candidates(store, clock)
    assert a.try_acquire_or_renew() is True
    assert b.try_acquire_or_renew() is False and b.holder == "a"
    clock.now += 14
    assert b.try_acquire_or_renew() is False  # a stopped renewing 14s ago: not expired yet
    clock.now += 1
    assert b.try_acquire_or_renew() is True
    assert store.lease is not None and store.lease["spec"]["holderIdentity"] == "b"
    assert store.lease["spec"]["leaseTransitions"] == 1


def test_a_renewing_leader_is_never_replaced():
    store, clock = LeaseStore(), Clock()
    a, b = candidates(store, clock)
    a.try_acquire_or_renew()
    for _ in range(20):
        clock.now += 2
        assert a.try_acquire_or_renew() is True
        assert b.try_acquire_or_renew() is False


def test_a_released_lease_is_taken_at_once():
    store, clock = LeaseStore(), Clock()
    a, b = candidates(store, clock)
    a.try_acquire_or_renew()
    assert b.try_acquire_or_renew() is False
    assert a.release() is True
    assert b.try_acquire_or_renew() is True


def test_a_leader_that_cannot_renew_gives_up_at_the_renew_deadline():
    store, clock = LeaseStore(), Clock()
    a, _ = candidates(store, clock)
    a.try_acquire_or_renew()
    store.down = True
    stop, lost = threading.Event(), threading.Event()
    # keep_leading waits retry_period on `stop` between rounds; the fake clock moves instead.
    original_wait = stop.wait

    def tick(timeout: float | None = None) -> bool:
        clock.now += a.timing.retry_period
        return original_wait(0)

    stop.wait = tick  # type: ignore[method-assign]
    a.keep_leading(stop, lost.set)
    assert lost.is_set()
    assert clock.now - 1000.0 == pytest.approx(a.timing.renew_deadline)


def test_a_leader_that_sees_another_holder_stops_at_once():
    store, clock = LeaseStore(), Clock()
    a, _ = candidates(store, clock)
    a.try_acquire_or_renew()
    assert store.lease is not None
    store._store({**store.lease, "spec": {**store.lease["spec"], "holderIdentity": "b"}})
    stop, lost = threading.Event(), threading.Event()
    stop.wait = lambda timeout=None: False  # type: ignore[method-assign]
    a.keep_leading(stop, lost.set)
    assert lost.is_set() and a.leading is False


# ---------------------------------------------------------------- health


@pytest.mark.parametrize(("state", "now", "live", "ready"), [
    (State(Phase.STARTING, started_at=0), 10, True, False),
    (State(Phase.STARTING, started_at=0), 61, False, False),
    (State(Phase.STANDBY, started_at=0, election_attempt=100, api_contact=100), 110, True, True),
    (State(Phase.STANDBY, started_at=0, election_attempt=100, api_contact=50), 110, True, False),
    (State(Phase.STANDBY, started_at=0, election_attempt=10, api_contact=10), 110, False, False),
    (State(Phase.LEADING, started_at=0, heartbeat=100, operator_ready=True), 110, True, True),
    (State(Phase.LEADING, started_at=0, heartbeat=100, operator_ready=False), 110, True, False),
    (State(Phase.LEADING, started_at=0, heartbeat=50, operator_ready=True), 110, False, False),
    (State(Phase.LEADING, started_at=100), 110, True, False),
    (State(Phase.STOPPING, started_at=0), 1000, True, False),
], ids=["starting", "start-timeout", "standby", "standby-no-api", "standby-stalled", "leading",
        "leading-watches-starting", "leading-loop-stalled", "leading-before-first-beat", "stopping"])
def test_assess(state, now, live, ready):
    verdict = assess(state, now, stall_seconds=30, start_grace_seconds=60)
    assert (verdict.live, verdict.ready) == (live, ready), verdict.reason


def test_the_health_endpoint_answers_200_or_503():
    clock = Clock()
    health = Health(clock=clock)
    port, stop = health.serve(0, addr="127.0.0.1")

    def status(path: str) -> int:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).status  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        assert (status("/healthz"), status("/readyz")) == (200, 503)
        health.update(phase=Phase.LEADING, operator_ready=True)
        health.beat()
        assert (status("/healthz"), status("/readyz")) == (200, 200)
        clock.now += health.stall_seconds + 1
        assert (status("/healthz"), status("/readyz")) == (503, 503)
        assert status("/nope") == 404
    finally:
        stop()


def test_a_plain_text_refusal_is_a_kube_error_with_its_retry_after():
    # The API server's priority-and-fairness filter answers 429 with a line of text, not a
    # Status object.
    import http.server

    from kubernetes import client as k8s

    class TooMany(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = b"Too many requests, please try again later.\n"
            self.send_response(429)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Retry-After", "3")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TooMany)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        configuration = k8s.Configuration(host=f"http://127.0.0.1:{server.server_port}")
        api = kube.Kube(k8s.ApiClient(configuration))
        with pytest.raises(kube.KubeError) as caught:
            api.create_lease({"metadata": {"namespace": "ml", "name": "x"}})
    finally:
        server.shutdown()
    assert caught.value.code == 429 and caught.value.retryable
    assert caught.value.retry_after == 3.0
    assert caught.value.message == "Too many requests, please try again later."


def _event_server(failures: list[int]) -> Any:
    """An API server that refuses the first Event posts with the given codes, then accepts."""
    import http.server

    posts: list[int] = []

    class Events(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            code = failures[len(posts)] if len(posts) < len(failures) else 201
            posts.append(code)
            body = json.dumps({"kind": "Status", "code": code, "reason": "x", "message": "m"} if code >= 400
                              else {"kind": "Event"}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Events)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, posts


@pytest.mark.parametrize(("failures", "posts", "raised"), [
    ([500, 503], 3, None),  # retried until it lands
    ([500, 500, 500, 500], 3, 500),  # bounded: after 3 attempts the caller is told
    ([422], 1, None),  # refused for good: not retried, dropped with a warning
])
def test_a_failed_event_post_is_retried_a_bounded_number_of_times(failures, posts, raised):
    from kubernetes import client as k8s

    server, seen = _event_server(failures)
    error = None
    try:
        api = kube.Kube(k8s.ApiClient(k8s.Configuration(host=f"http://127.0.0.1:{server.server_port}")))
        isvc_body = {"metadata": {"name": "a", "namespace": "ml", "uid": "u"}}
        try:
            api.post_event(isvc_body, "Normal", "RolloutStarted", "Started rolling out revision r")
        except kube.KubeError as exc:
            error = exc.code
    finally:
        server.shutdown()
    assert (len(seen), error) == (posts, raised)


# ---------------------------------------------------------------- the drain key


class SecretStore:
    """An in-memory Secret API: AlreadyExists on a second create, and scripted failures."""

    def __init__(self, failures: list[KubeError] | None = None) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.failures = list(failures or [])
        self.calls: list[str] = []

    def _maybe_fail(self, call: str) -> None:
        self.calls.append(call)
        if self.failures:
            raise self.failures.pop(0)

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._maybe_fail("get")
        found = self.secrets.get((namespace, name))
        return json.loads(json.dumps(found)) if found else None

    def create_secret(self, secret: dict[str, Any]) -> dict[str, Any]:
        self._maybe_fail("create")
        key = (secret["metadata"]["namespace"], secret["metadata"]["name"])
        if key in self.secrets:
            raise KubeError(409, "AlreadyExists", "exists")
        self.secrets[key] = secret
        return json.loads(json.dumps(secret))


def test_the_drain_key_waits_out_an_unreachable_api_server():
    from tfleet.runtime import drain_key

    store = SecretStore([KubeError(0, "Unreachable", "refused"), KubeError(503, "ServiceUnavailable", "x", 0.01)])
    key = drain_key.load(store, "ops", "k", threading.Event(), make_key=lambda: b"k" * 32)
    assert key == b"k" * 32
    assert store.calls == ["get", "get", "get", "create"]
    secret = store.secrets[("ops", "k")]
    assert secret["immutable"] is True and secret["type"] == "Opaque"
    # A second start reads the same key and creates nothing.
    assert drain_key.ensure(store, "ops", "k", make_key=lambda: b"other key bytes!" * 2) == (b"k" * 32, False)


def test_a_forbidden_secret_stops_the_operator_with_the_reason():
    from tfleet.runtime import drain_key

    store = SecretStore([KubeError(403, "Forbidden", 'secrets "k" is forbidden')])
    with pytest.raises(drain_key.DrainKeyError) as caught:
        drain_key.load(store, "ops", "k", threading.Event())
    assert str(caught.value) == 'cannot read or create Secret ops/k: 403 Forbidden: secrets "k" is forbidden'


def test_a_stopped_operator_stops_waiting_for_the_drain_key():
    from tfleet.runtime import drain_key

    stop = threading.Event()
    stop.set()
    assert drain_key.load(SecretStore([KubeError(0, "Unreachable", "refused")] * 3), "ops", "k", stop) is None


@pytest.mark.parametrize(("data", "message"), [
    (None, "Secret ops/k has no data.key: delete it and the operator creates a new one"),
    ({"key": "not base64!"}, "Secret ops/k: data.key is not base64"),
    ({"key": "c2hvcnQ="}, "Secret ops/k: data.key: a drain key needs at least 16 bytes, this one has 5"),
])
def test_an_unusable_secret_is_named_and_never_replaced(data, message):
    from tfleet.runtime import drain_key

    store = SecretStore()
    store.secrets[("ops", "k")] = {"metadata": {"namespace": "ops", "name": "k"}, **({"data": data} if data else {})}
    with pytest.raises(drain_key.DrainKeyError) as caught:
        drain_key.load(store, "ops", "k", threading.Event())
    assert str(caught.value) == message
    assert "create" not in store.calls
