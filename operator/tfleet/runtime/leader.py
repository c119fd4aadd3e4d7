"""Leader election with a coordination.k8s.io/v1 Lease: one active operator, standbys waiting.

The protocol is the one Kubernetes' own controllers use, so `kubectl get lease` reads it
the usual way:

- A candidate reads the Lease. If there is none it creates one naming itself; if the
  holder is itself it renews (`renewTime`); if the Lease is released (no holder) or
  expired it takes it over (`leaseTransitions` + 1). Every write carries the
  resourceVersion it read, so of two candidates racing for a Lease exactly one wins and
  the other gets 409.
- Expiry is judged on this process's own monotonic clock: a Lease is expired when its
  record (holder, renewTime) has not changed for `leaseDurationSeconds` since this process
  first saw it. Clocks of different nodes never get compared.
- The leader renews every `retry_period`. If it cannot renew for `renew_deadline` (shorter
  than the lease duration, so it stops before anyone else may start) or sees another
  holder, it has lost the lease: the operator process then exits, and Kubernetes restarts
  it as a standby.
- A leader that stops cleanly releases the Lease (no holder, duration 1s), so a standby
  takes over within one retry period instead of waiting for the lease to expire.

`plan` and `lease_record` are pure; `LeaderElector` does the I/O through `Kube`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from tfleet.api.times import format_micros, from_epoch
from tfleet.runtime.kube import Kube, KubeError

log = logging.getLogger(__name__)

Manifest = dict[str, Any]

DEFAULT_LEASE_NAME = "tfleet-operator"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class Action(Enum):
    CREATE = "create"  # no Lease yet
    RENEW = "renew"  # we hold it
    ACQUIRE = "acquire"  # released or expired: take it over
    WAIT = "wait"  # someone else holds a live Lease


@dataclass(frozen=True)
class Timing:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election needs 0 < retry period < renew deadline < lease duration, got "
                             f"{self.retry_period}s, {self.renew_deadline}s, {self.lease_duration}s")


def micro_time(epoch_seconds: float) -> str:
    """A Lease's MicroTime: RFC 3339 with microseconds."""
    return format_micros(from_epoch(epoch_seconds))


def holder_of(lease: Manifest | None) -> str:
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def record_of(lease: Manifest | None) -> tuple[str, str, int]:
    """What changes when a holder renews or hands over; a frozen record means a dead holder."""
    spec = (lease or {}).get("spec") or {}
    return str(spec.get("holderIdentity") or ""), str(spec.get("renewTime") or ""), int(spec.get("leaseTransitions") or 0)


def plan(lease: Manifest | None, identity: str, observed_at: float, now: float) -> Action:
    """What a candidate does next, given the Lease it read and when its record last changed."""
    if lease is None:
        return Action.CREATE
    holder = holder_of(lease)
    if holder == identity:
        return Action.RENEW
    if not holder:
        return Action.ACQUIRE
    duration = float((lease.get("spec") or {}).get("leaseDurationSeconds") or 0)
    return Action.ACQUIRE if now - observed_at >= duration else Action.WAIT


def lease_record(lease: Manifest | None, *, namespace: str, name: str, identity: str, action: Action,
                 duration_seconds: int, wall_now: float) -> Manifest:
    """The Lease to write for `action` (CREATE, RENEW or ACQUIRE), keeping the read resourceVersion."""
    now = micro_time(wall_now)
    spec = dict((lease or {}).get("spec") or {})
    transitions = int(spec.get("leaseTransitions") or 0)
    if action is Action.RENEW:
        spec.update(renewTime=now, leaseDurationSeconds=duration_seconds)
    else:
        spec.update(holderIdentity=identity, acquireTime=now, renewTime=now,
                     leaseDurationSeconds=duration_seconds,
                     leaseTransitions=transitions + 1 if action is Action.ACQUIRE else 0)
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if lease is not None:
        old = lease.get("metadata") or {}
        metadata.update({k: old[k] for k in ("resourceVersion", "labels", "annotations") if k in old})
    else:
        metadata["labels"] = {"app.kubernetes.io/name": "tfleet", "app.kubernetes.io/component": "operator"}
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}


def default_identity() -> str:
    """Unique per process: the pod name (from the Downward API) or host name, and a suffix,
    so a restarted container never mistakes its predecessor's lease for its own."""
    base = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}_{uuid.uuid4().hex[:8]}"


def default_namespace() -> str:
    """The operator's own namespace: from the Downward API, the service account, or default."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


class LeaderElector:
    def __init__(self, kube: Kube, namespace: str, name: str = DEFAULT_LEASE_NAME, identity: str | None = None,
                 timing: Timing | None = None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.kube = kube
        self.namespace, self.name = namespace, name
        self.identity = identity or default_identity()
        self.timing = timing or Timing()
        self._clock, self._wall = clock, wall
        self._record: tuple[str, str, int] | None = None
        self._observed_at = 0.0
        self.leading = False
        self.last_renewed = 0.0  # monotonic time of the last successful acquire or renew
        self.last_attempt = 0.0  # monotonic time of the last round, successful or not
        self.last_contact = 0.0  # monotonic time of the last answer from the API server
        self.holder = ""

    @property
    def lease_ref(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def _observe(self, lease: Manifest | None, now: float) -> None:
        record = record_of(lease)
        if record != self._record:
            self._record, self._observed_at = record, now
        self.holder = record[0]

    def try_acquire_or_renew(self) -> bool:
        """One round: True when this process holds the Lease afterwards."""
        now = self._clock()
        self.last_attempt = now
        try:
            lease = self.kube.get_lease(self.namespace, self.name)
            self.last_contact = self._clock()
            self._observe(lease, now)
            action = plan(lease, self.identity, self._observed_at, now)
            if action is Action.WAIT:
                self.leading = False
                return False
            body = lease_record(lease, namespace=self.namespace, name=self.name, identity=self.identity,
                                action=action, duration_seconds=max(1, round(self.timing.lease_duration)),
                                wall_now=self._wall())
            written = self.kube.create_lease(body) if action is Action.CREATE else self.kube.update_lease(body)
        except KubeError as exc:
            if exc.code != 409:
                log.warning("Failed to read or write %s: %s", self.lease_ref, exc)
            else:
                self.last_contact = self._clock()
            return False
        self.last_contact = self.last_renewed = self._clock()
        self._observe(written, now)
        if action is not Action.RENEW:
            log.info("Acquired %s as %s", self.lease_ref, self.identity)
        self.leading = True
        return True

    def acquire(self, stop: threading.Event, on_round: Callable[[LeaderElector], None] | None = None) -> bool:
        """Block until this process leads (True) or `stop` is set (False)."""
        logged_holder = None
        while not stop.is_set():
            acquired = self.try_acquire_or_renew()
            if on_round is not None:
                on_round(self)
            if acquired:
                return True
            if self.holder and self.holder != logged_holder:
                log.info("Waiting for %s, held by %s", self.lease_ref, self.holder)
                logged_holder = self.holder
            stop.wait(self.timing.retry_period)
        return False

    def keep_leading(self, stop: threading.Event, on_lost: Callable[[], None]) -> None:
        """Renew until `stop` is set; call `on_lost` once if the lease slips away first."""
        while not stop.wait(self.timing.retry_period):
            if self.try_acquire_or_renew():
                continue
            lost_to_other = bool(self.holder) and self.holder != self.identity
            if lost_to_other or self._clock() - self.last_renewed >= self.timing.renew_deadline:
                self.leading = False
                reason = f"now held by {self.holder}" if lost_to_other else \
                    f"not renewed for {self.timing.renew_deadline:g}s"
                log.error("Lost %s: %s", self.lease_ref, reason)
                on_lost()
                return

    def release(self) -> bool:
        """Hand the Lease back so a standby need not wait for it to expire."""
        if not self.leading:
            return False
        self.leading = False
        try:
            lease = self.kube.get_lease(self.namespace, self.name)
            if holder_of(lease) != self.identity or lease is None:
                return False
            spec = dict(lease.get("spec") or {})
            spec.pop("holderIdentity", None)
            spec.update(leaseDurationSeconds=1, renewTime=micro_time(self._wall()))
            self.kube.update_lease({**lease, "spec": spec})
        except KubeError as exc:
            log.warning("Failed to release %s: %s", self.lease_ref, exc)
            return False
        log.info("Released %s", self.lease_ref)
        return True
