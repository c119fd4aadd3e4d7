"""The chaos scenario: a fleet of canary rollouts under API faults and operator kills.

One scenario, used by `e2e/tests/test_chaos.py` (inside `make test`) and by `make chaos`
(`python -m e2e.chaos`, several seeds, harsher settings), so the two cannot drift:

1. A fleet of InferenceServices (3 replicas each, two canary steps) is created and becomes
   Ready, with no faults.
2. Faults are switched on for the operator's own traffic only (its user agents, the
   fleet's namespace; watch cuts for all its watches), reproducibly from a seed: 500
   before and after a write is applied, 429 with Retry-After, 409 on status patches, 503
   on reads, and watch streams cut after 2 to 10 s (half of them mid-line).
3. Every InferenceService is moved to model version 2 in one `kubectl apply`. While the
   rollouts run, the operator is SIGKILLed (with leader election: the leader is, and the
   time until a standby takes over is measured) whenever the fleet's progress passes
   the next of `kills` evenly spaced marks.
4. Throughout, a sampler that the faults do not touch lists the InferenceServices and
   Deployments every 0.5 s and records every violation of what must hold at every moment
   (`Invariants`).
5. Once every rollout has succeeded and the operator has gone quiet: an idle window with
   no operator write, and a clean restart (SIGTERM, then start; with leader election,
   the leader steps down and the standby takes over) with no write either.
6. The end state: one `RolloutStarted` and one `RolloutSucceeded` Event object per
   InferenceService, no orphans, no duplicate revisions, no traceback in any log.

Everything observed goes into a `Report`; `Report.problems()` lists what failed.

    python -m e2e.chaos --seeds 1 2 3 [--services 30] [--kills 4] [--operators 2]
                        [--fault-scale 2] [--idle 30]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from e2e.operators import (
    START_TIMEOUT_SECONDS,
    STARTED,
    LeaseTiming,
    OperatorGroup,
    OperatorProcess,
)

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "inferenceservices.tfleet.dev.yaml"
DEFAULTS_CRD = ROOT / "crds" / "inferenceservicedefaults.tfleet.dev.yaml"
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"

Manifest = dict[str, Any]
Kubectl = Callable[..., subprocess.CompletedProcess[str]]

OPERATOR_AGENTS = ("tfleet/operator", "kopf/")
WRITES = ("create", "update", "patch", "delete")
READS = ("get", "list")
ISVC_API = "/apis/tfleet.dev/v1alpha1"
LABEL_ISVC = "tfleet.dev/inferenceservice"
LABEL_REVISION = "tfleet.dev/revision"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
ACTIVE = ("Progressing", "Paused", "Promoting")
# The children the operator writes, by the path that lists them in a namespace.
CHILD_LISTS = {
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "Service": "/api/v1/namespaces/{ns}/services",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "HorizontalPodAutoscaler": "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
}
# What kubectl asks for to print a list: the server's Table.
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
FAULT_COLUMNS = (("internal_error", "500"), ("internal_error_after_apply", "500 lost"),
                 ("too_many_requests", "429"), ("conflict", "409"), ("service_unavailable", "503"),
                 ("watch_cut", "cuts"))


# ---------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class FaultRates:
    """Probabilities per request in scope, and the range of watch lifetimes."""

    internal_error: float = 0.05  # 500 before a write is applied
    internal_error_after_apply: float = 0.05  # the write applied, its answer lost
    too_many_requests: float = 0.03  # 429, Retry-After: 1
    conflict: float = 0.02  # 409 on InferenceService status patches
    service_unavailable: float = 0.03  # 503 on reads, Retry-After: 1
    watch_cut_seconds: tuple[int, int] = (2, 10)

    def scaled(self, factor: float) -> FaultRates:
        """Every probability times `factor` (at most 0.5), watches cut `factor` times sooner."""
        def p(x: float) -> float:
            return min(0.5, x * factor)

        low, high = self.watch_cut_seconds
        return FaultRates(p(self.internal_error), p(self.internal_error_after_apply), p(self.too_many_requests),
                          p(self.conflict), p(self.service_unavailable),
                          (max(1, round(low / factor)), max(1, round(high / factor))))


@dataclass(frozen=True)
class Config:
    seed: int = 1
    services: int = 30
    replicas: int = 3
    steps: tuple[tuple[int, str], ...] = ((25, "2s"), (50, "2s"))
    faults: FaultRates = FaultRates()
    kills: int = 2
    operators: int = 1  # more than one: replicas with leader election
    lease: LeaseTiming = field(default_factory=LeaseTiming)
    # No operator write for this long counts as settled after the rollouts.
    quiet_seconds: float = 3.0
    idle_seconds: float = 30.0
    # After a clean restart: how long the new operator is watched for writes once it runs.
    restart_window_seconds: float = 5.0
    # A kill waits at least this long after the operator (re)started, so it has worked.
    min_kill_gap_seconds: float = 2.0
    ready_timeout_seconds: float = 90.0
    rollout_timeout_seconds: float = 120.0
    sample_interval_seconds: float = 0.5

    @property
    def takeover_bound_seconds(self) -> float:
        return self.lease.lease_duration + 5.0


def manifest(name: str, namespace: str, version: int, config: Config) -> Manifest:
    return {"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": {"basePath": f"gs://chaos-models/{name}", "version": version},
                     "replicas": config.replicas,
                     "rollout": {"steps": [{"weight": w, "pause": p} for w, p in config.steps],
                                 "progressDeadlineSeconds": 300}}}


def fleet_names(config: Config) -> list[str]:
    return [f"chaos-{i:02d}" for i in range(config.services)]


def fault_rules(rates: FaultRates, namespace: str, lease_name: str | None = None) -> list[tuple[str, Manifest]]:
    """The rules, in the order the injector tries them (the first that fires decides)."""
    scope: Manifest = {"user_agents": list(OPERATOR_AGENTS), "namespaces": [namespace]}
    rules: list[tuple[str, Manifest]] = [
        ("internal_error", {**scope, "verbs": list(WRITES), "probability": rates.internal_error}),
        ("internal_error_after_apply", {**scope, "verbs": list(WRITES),
                                        "probability": rates.internal_error_after_apply}),
        ("too_many_requests", {**scope, "verbs": [*READS, *WRITES], "probability": rates.too_many_requests,
                               "retry_after_seconds": 1}),
        ("conflict", {**scope, "verbs": ["update", "patch"], "resources": ["inferenceservices/status"],
                      "probability": rates.conflict}),
        ("service_unavailable", {**scope, "verbs": list(READS), "probability": rates.service_unavailable}),
    ]
    # A watch lives a whole number of seconds drawn evenly from the range: the rule for s
    # seconds fires with 1 / (the lifetimes left), so each lifetime gets the same share.
    # Odd lifetimes end mid-line, as when the server dies while writing.
    low, high = rates.watch_cut_seconds
    for seconds in range(low, high + 1):
        rules.append(("watch_cut", {"user_agents": list(OPERATOR_AGENTS), "after_seconds": float(seconds),
                                    "probability": 1.0 / (high - seconds + 1), "truncate": seconds % 2 == 1}))
    return rules


# ---------------------------------------------------------------------- reading the cluster

class Reader:
    """GETs with a plain client on one kept-alive connection (the faults do not touch it:
    they are scoped to the operator's user agents). One per thread."""

    def __init__(self, url: str):
        parsed = urllib.parse.urlsplit(url)
        self._host, self._port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str, accept: str = "application/json") -> Manifest:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=15)
            try:
                self._conn.request("GET", path, headers={"Accept": accept, "User-Agent": "tfleet-chaos"})
                response = self._conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
                continue
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
            return json.loads(body)  # type: ignore[no-any-return]
        raise AssertionError("unreachable")

    def items(self, path: str) -> list[Manifest]:
        return list(self.get(path).get("items") or [])

    def table(self, path: str) -> list[dict[str, Any]]:
        """A LIST as the server prints it (`kubectl get`'s columns, no objects): a row per
        object, as {column name: cell}. A fraction of the objects' size to send and parse."""
        body = self.get(path + ("&" if "?" in path else "?") + "includeObject=None", accept=TABLE)
        names = [c["name"] for c in body.get("columnDefinitions") or []]
        return [dict(zip(names, row.get("cells") or [], strict=False)) for row in body.get("rows") or []]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass(frozen=True)
class DeploymentRow:
    """What the invariants need of a Deployment, from its row in the server's Table."""

    name: str
    isvc: str
    revision: str
    replicas: int  # spec.replicas
    ready: int  # status.readyReplicas


def deployment_rows(rows: Iterable[dict[str, Any]]) -> list[DeploymentRow]:
    """Table rows of Deployments: `Ready` is `readyReplicas/replicas`, `Selector` the
    selector's `key=value` pairs (tfleet's Deployments select their InferenceService and
    revision labels)."""
    out = []
    for row in rows:
        ready, _, replicas = str(row.get("Ready", "0/0")).partition("/")
        labels = dict(pair.partition("=")[::2] for pair in str(row.get("Selector") or "").split(",") if "=" in pair)
        out.append(DeploymentRow(str(row.get("Name")), labels.get(LABEL_ISVC, ""), labels.get(LABEL_REVISION, ""),
                                 int(replicas or 0), int(ready or 0)))
    return out


def rollout_of(isvc: Manifest) -> Manifest:
    return ((isvc.get("status") or {}).get("rollout")) or {}


def condition(isvc: Manifest, kind: str) -> Manifest | None:
    return next((c for c in (isvc.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def progress_of(isvc: Manifest, steps: int, target_version: int) -> int:
    """0 before the rollout shows, 1 + step while stepping, 1 + steps promoting, 2 + steps done."""
    rollout = rollout_of(isvc)
    phase = rollout.get("phase")
    if phase == "Succeeded" and rollout.get("targetVersion") == target_version:
        return 2 + steps
    if phase == "Promoting":
        return 1 + steps
    if phase in ("Progressing", "Paused") and rollout.get("canaryRevision"):
        return 1 + int(rollout.get("step") or 0)
    return 0


# ---------------------------------------------------------------------- invariants

class Invariants:
    """Lists the InferenceServices and Deployments every `interval` seconds (one LIST each;
    Deployments as the server's Table, which holds all that is needed at a fraction of the
    cost: at 30 InferenceServices the objects are about 300 KB a sample) and records every
    violation of:

    - ready capacity (ready pods of every revision) never below `spec.replicas`;
    - a canary Deployment never scaled down while its rollout progresses, unless the
      rollout then rolls back (the scale-down is judged once the rollout has ended);
    - `status.rollout.step` never going backwards within one rollout (one canary revision);
    - Ready never flapping: never seen other than True, and its lastTransitionTime never
      moving (which also catches a flap between two samples).
    """

    def __init__(self, url: str, namespace: str, steps: int, interval: float = 0.5):
        self.reader = Reader(url)
        self.namespace, self.steps, self.interval = namespace, steps, interval
        self.violations: list[str] = []
        self.samples = 0
        self.sample_cpu_seconds = 0.0
        self.sample_wall_seconds = 0.0
        self.latest: list[Manifest] = []  # the InferenceServices of the last sample
        self._canary_peak: dict[tuple[str, str], int] = {}
        self._scaled_down: dict[tuple[str, str], str] = {}  # judged once the rollout ends
        self._steps: dict[tuple[str, str], int] = {}
        self._ready_since: dict[str, str] = {}
        self._failed: set[tuple[str, str]] = set()  # (isvc, revision) rolled back
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-invariants", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.reader.close()
        with self._lock:
            for (name, canary), text in self._scaled_down.items():
                if (name, canary) not in self._failed:
                    self.violations.append(text)
            self._scaled_down.clear()

    def snapshot(self) -> list[Manifest]:
        with self._lock:
            return list(self.latest)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            cpu, wall = time.thread_time(), time.monotonic()
            try:
                self.sample()
            except Exception as exc:  # a broken sampler must fail the scenario, not go quiet
                with self._lock:
                    self.violations.append(f"sampling failed: {exc!r}")
            self.sample_cpu_seconds += time.thread_time() - cpu
            self.sample_wall_seconds += time.monotonic() - wall
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def sample(self) -> None:
        ns = self.namespace
        isvcs = self.reader.items(f"{ISVC_API}/namespaces/{ns}/inferenceservices")
        deployments = deployment_rows(self.reader.table(f"/apis/apps/v1/namespaces/{ns}/deployments"))
        by_isvc: dict[str, list[DeploymentRow]] = {}
        for d in deployments:
            by_isvc.setdefault(d.isvc, []).append(d)
        found: list[str] = []
        for isvc in isvcs:
            found.extend(self._check(isvc, by_isvc.get(isvc["metadata"]["name"], [])))
        with self._lock:
            self.samples += 1
            self.latest = isvcs
            self.violations.extend(found)

    def _check(self, isvc: Manifest, deployments: list[DeploymentRow]) -> Iterator[str]:
        name = isvc["metadata"]["name"]
        wanted = int((isvc.get("spec") or {}).get("replicas") or 0)
        ready = sum(d.ready for d in deployments)
        if ready < wanted:
            yield f"{name}: ready capacity {ready} < spec.replicas {wanted}"
        yield from self._check_ready(name, condition(isvc, "Ready"))
        rollout = rollout_of(isvc)
        failed = rollout.get("failedRevision")
        if failed:
            with self._lock:
                self._failed.add((name, failed))
        canary, phase = rollout.get("canaryRevision"), rollout.get("phase")
        if not canary or phase not in ACTIVE:
            return
        key = (name, canary)
        step = self.steps if phase == "Promoting" else int(rollout.get("step") or 0)
        last = self._steps.get(key)
        if last is not None and step < last:
            yield f"{name}: status.rollout.step went back from {last} to {step} (rollout of {canary})"
        self._steps[key] = max(step, last if last is not None else step)
        for d in deployments:
            if d.revision != canary:
                continue
            replicas = d.replicas
            peak = self._canary_peak.get(key)
            if peak is not None and replicas < peak:
                with self._lock:
                    self._scaled_down.setdefault(
                        key, f"{name}: canary {canary} scaled down from {peak} to {replicas} while {phase}")
            self._canary_peak[key] = max(replicas, peak or 0)

    def _check_ready(self, name: str, ready: Manifest | None) -> Iterator[str]:
        if ready is None:
            yield f"{name}: no Ready condition"
            return
        if ready.get("status") != "True":
            yield f"{name}: Ready flapped to {ready.get('status')} ({ready.get('reason')}: {ready.get('message')})"
        since = str(ready.get("lastTransitionTime") or "")
        first = self._ready_since.setdefault(name, since)
        if since != first:
            self._ready_since[name] = since
            yield f"{name}: Ready transitioned again at {since} (was {first})"


# ---------------------------------------------------------------------- the report

@dataclass
class Takeover:
    """One leader kill: when the standby took over, measured from the kill."""

    killed: str  # the Lease holder's identity
    new_leader: str = ""
    new_member: str = ""  # which replica that is
    lease_changed_seconds: float | None = None  # the Lease write naming the new holder
    leader_log_seconds: float | None = None  # its "Acquired Lease" log line
    first_write_seconds: float | None = None  # its first write to the fleet


@dataclass
class Report:
    seed: int
    config: Config
    services: int = 0
    succeeded: int = 0
    not_succeeded: list[str] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    failovers: list[Takeover] = field(default_factory=list)
    unplanned_restarts: int = 0  # replicas that exited on their own and were started again
    lease_losses: int = 0  # leaders that could not renew in time and stepped down
    violations: list[str] = field(default_factory=list)
    samples: int = 0
    sample_cpu_ms: float = 0.0  # mean CPU time of one sample, in the scenario's process
    sample_wall_ms: float = 0.0
    events: dict[str, Counter[str]] = field(default_factory=dict)  # isvc -> reason -> Event objects
    orphans: list[str] = field(default_factory=list)
    duplicate_revisions: list[str] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    settle_seconds: float = 0.0
    unsettled: list[Manifest] = field(default_factory=list)  # writes that never stopped
    idle_writes: list[Manifest] = field(default_factory=list)
    restart_writes: list[Manifest] = field(default_factory=list)
    restart_failures: list[str] = field(default_factory=list)  # no replica led after a clean stop
    rollout_seconds: float = 0.0
    wall_seconds: float = 0.0

    EVENT_REASONS = ("RolloutStarted", "RolloutSucceeded")

    def duplicate_events(self) -> dict[str, dict[str, int]]:
        return {name: {r: n for r, n in reasons.items() if r in self.EVENT_REASONS and n > 1}
                for name, reasons in self.events.items()
                if any(reasons[r] > 1 for r in self.EVENT_REASONS)}

    def missing_events(self) -> dict[str, list[str]]:
        missing = {name: [r for r in self.EVENT_REASONS if not self.events.get(name, Counter())[r]]
                   for name in fleet_names(self.config)}
        return {name: reasons for name, reasons in missing.items() if reasons}

    def late_takeovers(self) -> list[Takeover]:
        bound = self.config.takeover_bound_seconds
        return [t for t in self.failovers if t.lease_changed_seconds is None or t.lease_changed_seconds > bound]

    def problems(self) -> list[str]:
        out = []
        if self.succeeded != self.services:
            out.append(f"{self.services - self.succeeded} rollout(s) did not succeed: {self.not_succeeded[:5]}")
        if self.kills < self.config.kills:
            out.append(f"only {self.kills} of {self.config.kills} kills happened during the rollouts")
        out += [f"invariant: {v}" for v in self.violations[:20]]
        dup, missing = self.duplicate_events(), self.missing_events()
        if dup:
            out.append(f"duplicate Events for {len(dup)} InferenceService(s): {dict(list(dup.items())[:5])}")
        if missing:
            out.append(f"missing Events for {len(missing)} InferenceService(s): {dict(list(missing.items())[:5])}")
        out += [f"orphan: {o}" for o in self.orphans[:10]]
        out += [f"duplicate revision: {d}" for d in self.duplicate_revisions[:10]]
        out += [f"traceback in the log of {t}" for t in self.tracebacks[:3]]
        if self.unsettled:
            out.append(f"the operator kept writing after the rollouts: {[_describe(e) for e in self.unsettled[:5]]}")
        if self.idle_writes:
            out.append(f"{len(self.idle_writes)} write(s) while idle: {[_describe(e) for e in self.idle_writes[:5]]}")
        if self.restart_writes:
            out.append(f"{len(self.restart_writes)} write(s) after a clean restart: "
                       f"{[_describe(e) for e in self.restart_writes[:5]]}")
        out += [f"after a clean stop: {f}" for f in self.restart_failures]
        for t in self.late_takeovers():
            out.append(f"no takeover within {self.config.takeover_bound_seconds:g}s of killing {t.killed}: {t}")
        return out


def _describe(entry: Manifest) -> str:
    return (f"{entry['time']} {entry['verb']} {entry.get('resource')}"
            f"{'/' + entry['subresource'] if entry.get('subresource') else ''} {entry.get('name')} {entry['code']}")


# ---------------------------------------------------------------------- the scenario

class RequestLog:
    """The control plane's request log (a list it appends to), read from a mark on."""

    def __init__(self, entries: list[Manifest]):
        self.entries = entries

    def mark(self) -> int:
        return len(self.entries)

    def operator_writes(self, namespace: str, since: int, until: int | None = None) -> list[Manifest]:
        """The operator's writes to the fleet (its Lease renewals aside)."""
        return [e for e in self.entries[since:until]
                if e["user_agent"].startswith(OPERATOR_AGENTS) and e["verb"] in (*WRITES, "deletecollection")
                and e.get("namespace") == namespace and e.get("resource") != "leases"]


def epoch_of(stamp: str) -> float:
    """A request log time (RFC 3339 with microseconds, UTC) in seconds since the epoch."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def log_time(line: str) -> float | None:
    """When a `tfleet run` log line was written: the JSON format's `time` (RFC 3339, UTC), or
    the text format's leading `asctime` (local time, `2026-12-01 12:30:08,266`)."""
    if line.startswith("{"):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            stamp = json.loads(line)["time"]
            return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
        return None
    with contextlib.suppress(ValueError):
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


class Scenario:
    """One run of the scenario against a control plane: `run()` returns its `Report`.

    `cluster` needs `.url`, `.faults` (the `FaultInjector`) and `.request_log`; `kubectl`
    runs kubectl against it; `operators` is started if it does not run yet.
    """

    def __init__(self, cluster: Any, kubectl: Kubectl, namespace: str, operators: OperatorGroup,
                 config: Config, say: Callable[[str], None] = lambda _: None):
        self.cluster, self.kubectl, self.ns = cluster, kubectl, namespace
        self.operators, self.config, self.say = operators, config, say
        self.log = RequestLog(cluster.request_log)
        self.reader = Reader(cluster.url)
        self.report = Report(seed=config.seed, config=config, services=config.services)
        # (takeover, request log mark, killed at, holder change seen at): measured at the end
        self._takeovers: list[tuple[Takeover, int, float, float | None]] = []

    # -- steps ----------------------------------------------------------------------------

    def run(self) -> Report:
        started = time.monotonic()
        cfg = self.config
        try:
            if not any(m.alive for m in self.operators.members):
                self.operators.start()
            log_marks = self.operators.log_sizes()
            self.create_fleet()
            self.faults_on()
            invariants = Invariants(self.cluster.url, self.ns, len(cfg.steps), cfg.sample_interval_seconds)
            invariants.start()
            try:
                with self.operators.supervised():
                    self.roll_out(invariants)
                    self.settle()
                    self.idle()
                    self.clean_restart()
            finally:
                invariants.stop()
                self.report.faults = self.faults_off()
            self.report.violations = invariants.violations
            self.report.samples = invariants.samples
            if invariants.samples:
                self.report.sample_cpu_ms = 1000 * invariants.sample_cpu_seconds / invariants.samples
                self.report.sample_wall_ms = 1000 * invariants.sample_wall_seconds / invariants.samples
            for takeover, mark, killed_at, seen_at in self._takeovers:
                self.measure_takeover(takeover, mark, killed_at, seen_at)
            self.check_end_state()
            self.check_logs(log_marks)
        finally:
            self.reader.close()
            self.report.unplanned_restarts = self.operators.restarts
            self.report.restart_failures += self.operators.failures
            self.report.wall_seconds = time.monotonic() - started
        return self.report

    def apply(self, version: int) -> None:
        docs = [manifest(name, self.ns, version, self.config) for name in fleet_names(self.config)]
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    def create_fleet(self) -> None:
        self.say(f"creating {self.config.services} InferenceServices in {self.ns}")
        self.apply(1)
        self.kubectl("wait", "--for=condition=Ready", "tfis", "--all", "-n", self.ns,
                     f"--timeout={self.config.ready_timeout_seconds:g}s", timeout=self.config.ready_timeout_seconds + 30)

    def faults_on(self) -> None:
        faults = self.cluster.faults
        faults.clear()
        faults.set_seed(self.config.seed)
        for kind, params in fault_rules(self.config.faults, self.ns):
            faults.add(kind, **params)

    def faults_off(self) -> dict[str, int]:
        injected: dict[str, int] = self.cluster.faults.injected()
        self.cluster.faults.clear()
        return injected

    def roll_out(self, invariants: Invariants) -> None:
        """Version 2 everywhere; kill the operator at evenly spaced marks of the fleet's progress."""
        cfg = self.config
        self.say(f"rolling out version 2 (seed {cfg.seed}, {cfg.kills} kill(s), {cfg.operators} operator(s))")
        start = time.monotonic()
        self.apply(2)
        marks = [(k + 1) / (cfg.kills + 1) for k in range(cfg.kills)]
        ready_at = time.monotonic()
        full = 2 + len(cfg.steps)
        deadline = start + cfg.rollout_timeout_seconds
        while True:
            isvcs = invariants.snapshot()
            scores = [progress_of(i, len(cfg.steps), 2) for i in isvcs]
            done = len(isvcs) == cfg.services and all(s == full for s in scores)
            if done or time.monotonic() > deadline:
                # Judged here, before the clean restart: a restarted operator would finish a
                # rollout that this one left stuck.
                self.report.succeeded = sum(s == full for s in scores)
                self.report.not_succeeded = sorted(
                    f"{i['metadata']['name']}: {rollout_of(i).get('phase')} step {rollout_of(i).get('step')} "
                    f"({rollout_of(i).get('message', '')})" for i, s in zip(isvcs, scores, strict=True) if s != full)
                break
            progress = sum(scores) / (full * cfg.services)
            if marks and progress >= marks[0] and time.monotonic() - ready_at >= cfg.min_kill_gap_seconds:
                marks.pop(0)
                self.kill(progress)
                ready_at = time.monotonic()
            time.sleep(0.1)
        self.report.rollout_seconds = time.monotonic() - start

    def kill(self, progress: float) -> None:
        # A replica that lost its Lease to the faults may be starting again: wait for one that leads.
        leader = self.operators.leader(timeout=self.config.takeover_bound_seconds + START_TIMEOUT_SECONDS)
        self.report.kills += 1
        self.say(f"kill {self.report.kills}: SIGKILL {leader.name} at {100 * progress:.0f}% of the rollouts")
        if not self.operators.elected:
            leader.kill()
            leader.start()
            return
        holder = self.operators.holder()
        mark, killed_at = self.log.mark(), time.time()
        seen_at = None
        leader.kill()
        takeover = Takeover(killed=holder)
        self.report.failovers.append(takeover)
        deadline = time.monotonic() + self.config.takeover_bound_seconds + 10
        while time.monotonic() < deadline:
            current = self.operators.holder()
            if current and current != holder:
                takeover.new_leader, seen_at = current, time.time()
                member = self.operators.member_of(current)
                takeover.new_member = member.name if member is not None else ""
                break
            time.sleep(0.1)
        self._takeovers.append((takeover, mark, killed_at, seen_at))
        # Like a pod that the Deployment starts again: it comes back as a standby.
        leader.start(standby=True)

    def measure_takeover(self, takeover: Takeover, mark: int, killed_at: float, seen_at: float | None) -> None:
        """From the request log: the write that changed the Lease is the last one applied
        before the new holder was seen (the killed leader's last renewal may be logged just
        after the kill; the new holder's next renewal comes a retry period later)."""
        if seen_at is None:
            return
        lease_ns, lease_name = self.operators.lease or ("", "")
        takeover.lease_changed_seconds = seen_at - killed_at
        for entry in self.log.entries[mark:]:
            at = epoch_of(entry["time"])
            if at > seen_at:
                break
            applied = 200 <= entry["code"] < 300 or entry.get("fault") == "internal_error_after_apply"
            if (entry.get("resource") == "leases" and entry["verb"] in ("update", "create") and applied
                    and entry.get("name") == lease_name and entry.get("namespace") == lease_ns):
                takeover.lease_changed_seconds = at - killed_at
        # Requests the killed leader had sent are logged when the server is done with them,
        # which may be after the kill: its successor's writes are those after the Lease changed.
        since = killed_at + (takeover.lease_changed_seconds or 0.0)
        writes = [e for e in self.log.operator_writes(self.ns, mark) if epoch_of(e["time"]) >= since]
        if writes:
            takeover.first_write_seconds = epoch_of(writes[0]["time"]) - killed_at
        # Its first leader line: "Acquired Lease", or (when the answer to its acquiring write
        # was lost, the next round renews what it already holds, silently) "Started the operator".
        member = next((m for m in self.operators.members if m.name == takeover.new_member), None)
        lines = member.log().splitlines() if member is not None else []
        logged = [log_time(line) for line in lines
                  if (takeover.new_leader in line and "Acquired Lease" in line) or STARTED in line]
        after = sorted(t for t in logged if t is not None and t >= killed_at)
        if after:
            takeover.leader_log_seconds = after[0] - killed_at

    def settle(self) -> None:
        """Until the operator has not written for `quiet_seconds` (its last status writes)."""
        start = time.monotonic()
        deadline = start + 30
        while True:
            since = self.log.mark()
            time.sleep(self.config.quiet_seconds)
            writes = self.log.operator_writes(self.ns, since)
            if not writes:
                break
            if time.monotonic() > deadline:
                self.report.unsettled = writes
                break
        self.report.settle_seconds = time.monotonic() - start

    def idle(self) -> None:
        self.say(f"idle for {self.config.idle_seconds:g}s")
        mark = self.log.mark()
        time.sleep(self.config.idle_seconds)
        self.report.idle_writes = self.log.operator_writes(self.ns, mark)

    def clean_restart(self) -> None:
        """SIGTERM the leader and start it again; with leader election a standby takes over
        (the Lease is released). The new operator lists everything and must write nothing."""
        self.say("clean restart")
        mark = self.log.mark()
        leader = self.operators.leader(timeout=self.config.takeover_bound_seconds + START_TIMEOUT_SECONDS)
        leader.stop()
        if self.operators.elected:
            # How soon is not what is measured here (the kills measure takeovers): a slow
            # start on a busy machine must not fail the scenario, only a standby that never leads.
            try:
                self.operators.leader(timeout=self.config.takeover_bound_seconds + START_TIMEOUT_SECONDS)
            except AssertionError as exc:
                self.report.restart_failures.append(str(exc))
            leader.start(standby=True)
        else:
            leader.start()
        time.sleep(self.config.restart_window_seconds)
        self.report.restart_writes = self.log.operator_writes(self.ns, mark)

    # -- the end state ----------------------------------------------------------------------

    def check_end_state(self) -> None:
        ns = self.ns
        isvcs = self.reader.items(f"{ISVC_API}/namespaces/{ns}/inferenceservices")
        uids = {i["metadata"]["uid"]: i["metadata"]["name"] for i in isvcs}
        full = 2 + len(self.config.steps)
        done = [i["metadata"]["name"] for i in isvcs if progress_of(i, len(self.config.steps), 2) == full]
        if len(done) < self.report.succeeded:  # succeeded once, and not any more
            self.report.succeeded = len(done)
            self.report.not_succeeded += sorted(
                f"{i['metadata']['name']}: {rollout_of(i).get('phase')} at the end ({rollout_of(i).get('message', '')})"
                for i in isvcs if i["metadata"]["name"] not in done)
        # Events: one object per transition (a repeat may raise its count, not add an object).
        events: dict[str, Counter[str]] = {name: Counter() for name in fleet_names(self.config)}
        for event in self.reader.items(f"/api/v1/namespaces/{ns}/events"):
            involved = event.get("involvedObject") or {}
            if involved.get("kind") == "InferenceService":
                events.setdefault(involved.get("name", ""), Counter())[event.get("reason", "")] += 1
        self.report.events = events
        # Children: each owned by exactly one InferenceService that exists; one per revision.
        revisions: Counter[tuple[str, str, str]] = Counter()
        for kind, path in CHILD_LISTS.items():
            for child in self.reader.items(path.format(ns=ns)):
                meta = child["metadata"]
                labels = meta.get("labels") or {}
                if labels.get(LABEL_MANAGED_BY) != "tfleet":
                    continue
                owners = [o for o in meta.get("ownerReferences") or [] if o.get("kind") == "InferenceService"]
                if len(owners) != 1 or owners[0].get("uid") not in uids or not owners[0].get("controller"):
                    self.report.orphans.append(f"{kind} {meta['name']} (owners: {meta.get('ownerReferences')})")
                if kind in ("Deployment", "ConfigMap") and LABEL_REVISION in labels:
                    revisions[(kind, labels.get(LABEL_ISVC, ""), labels[LABEL_REVISION])] += 1
        self.report.duplicate_revisions = [f"{k} {isvc} revision {rev}: {n} objects"
                                           for (k, isvc, rev), n in revisions.items() if n > 1]
        per_isvc = Counter(isvc for (k, isvc, _rev) in revisions if k == "Deployment")
        for name in fleet_names(self.config):
            if per_isvc[name] != 2:
                self.report.duplicate_revisions.append(f"{name}: {per_isvc[name]} revision Deployments, not 2")

    def check_logs(self, marks: dict[str, int]) -> None:
        """Every fault is handled: none surfaces as a traceback in an operator's log. Leaders
        that stepped down because faults kept them from renewing are counted."""
        for member in self.operators.members:
            text = member.log()[marks.get(member.name, 0):]
            self.report.lease_losses += text.count("Lost Lease")
            if "Traceback" in text:
                at = text.index("Traceback")
                self.report.tracebacks.append(f"{member.name}:\n{text[max(0, at - 300):at + 3000]}")


# ---------------------------------------------------------------------- the summary table

def table(reports: Iterable[Report]) -> str:
    headers = ["seed", "services", "succeeded", *(label for _, label in FAULT_COLUMNS), "kills", "failovers",
               "takeover s", "lease lost", "violations", "dup events", "missing events", "idle writes", "restart writes",
               "wall s", "result"]
    rows = []
    for r in reports:
        takeover = max((t.lease_changed_seconds or 0.0 for t in r.failovers), default=None)
        rows.append([str(r.seed), str(r.services), str(r.succeeded),
                     *(str(r.faults.get(kind, 0)) for kind, _ in FAULT_COLUMNS),
                     str(r.kills), str(len(r.failovers)), "-" if takeover is None else f"{takeover:.1f}",
                     str(r.lease_losses),
                     str(len(r.violations)), str(len(r.duplicate_events())), str(len(r.missing_events())),
                     str(len(r.idle_writes)), str(len(r.restart_writes)), f"{r.wall_seconds:.0f}",
                     "ok" if not r.problems() else "FAILED"])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = " | ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))
    rule = "-+-".join("-" * w for w in widths)
    body = [" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([line, rule, *body])


# ---------------------------------------------------------------------- `make chaos`

def _kubectl(kubeconfig: Path, cache: Path) -> Kubectl:
    def run(*args: str, input: str | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(KUBECTL), "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache), *args]
        result = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
        return result

    return run


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = Config()
    parser = argparse.ArgumentParser(prog="python -m e2e.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], metavar="N",
                        help="one run per seed (default: 1)")
    parser.add_argument("--services", type=int, default=defaults.services, help="InferenceServices in the fleet")
    parser.add_argument("--kills", type=int, default=4, help="SIGKILLs of the (leading) operator per run")
    parser.add_argument("--operators", type=int, default=2,
                        help="operator replicas; more than one run with leader election (default: 2)")
    parser.add_argument("--fault-scale", type=float, default=2.0,
                        help="fault probabilities times this, watch lifetimes divided by it (default: 2)")
    parser.add_argument("--idle", type=float, default=defaults.idle_seconds, help="idle window in seconds")
    parser.add_argument("--details", action="store_true", help="also print every takeover")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep the operators' logs and the request log (requests.jsonl) in DIR")
    args = parser.parse_args(argv)
    for name in ("services", "operators"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.kills < 0:
        parser.error(f"--kills must not be negative, got {args.kills}")
    if args.fault_scale < 0:
        parser.error(f"--fault-scale must not be negative, got {args.fault_scale}")
    if args.idle < 0:
        parser.error(f"--idle must not be negative, got {args.idle}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if not KUBECTL.exists():
        print(f"{KUBECTL} is missing: run `make tools`", file=sys.stderr)
        return 2
    from e2e.localcluster.fixtures import RunningCluster

    base = Config(services=args.services, kills=args.kills, operators=args.operators,
                  faults=FaultRates().scaled(args.fault_scale), idle_seconds=args.idle)
    reports: list[Report] = []
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            workdir = args.keep
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tfleet-chaos-")))
        cluster = RunningCluster(workdir / "kubeconfig").start()
        try:
            kubectl = _kubectl(cluster.kubeconfig, workdir / "kubectl-cache")
            kubectl("apply", "-f", str(CRD), "-f", str(DEFAULTS_CRD))
            kubectl("wait", "--for=condition=Established", "crd/inferenceservices.tfleet.dev",
                    "crd/inferenceservicedefaults.tfleet.dev", "--timeout=30s")
            for seed in args.seeds:
                report = _run_seed(cluster, kubectl, workdir, replace(base, seed=seed))
                reports.append(report)
                print(f"  [seed {seed}] {'ok' if not report.problems() else 'FAILED'} in "
                      f"{report.wall_seconds:.0f}s", flush=True)
        finally:
            cluster.stop()
            if args.keep is not None:
                with open(workdir / "requests.jsonl", "w") as out:
                    out.writelines(json.dumps(entry) + "\n" for entry in cluster.request_log)
                print(f"logs kept in {workdir}")
    print("\n" + table(reports))
    failed = False
    for report in reports:
        if args.details:
            for t in report.failovers:
                print(f"seed {report.seed}: {t}")
        for problem in report.problems():
            failed = True
            print(f"seed {report.seed}: {problem}")
    return 1 if failed else 0


def _run_seed(cluster: Any, kubectl: Kubectl, workdir: Path, config: Config) -> Report:
    namespace = f"chaos-{config.seed}-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    seed_dir = workdir / f"seed-{config.seed}"
    seed_dir.mkdir(exist_ok=True)
    if config.operators > 1:
        operators = OperatorGroup.replicas(cluster.kubeconfig, cluster.url, seed_dir, config.operators,
                                           lease_namespace=namespace, timing=config.lease)
    else:
        operators = OperatorGroup([OperatorProcess(cluster.kubeconfig, seed_dir / "operator.log")])
    try:
        return Scenario(cluster, kubectl, namespace, operators, config,
                        say=lambda text: print(f"  [seed {config.seed}] {text}", flush=True)).run()
    finally:
        operators.close()
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


__all__ = ["Config", "FaultRates", "Invariants", "Report", "Scenario", "Takeover", "fault_rules",
           "main", "table"]

if __name__ == "__main__":
    sys.exit(main())
