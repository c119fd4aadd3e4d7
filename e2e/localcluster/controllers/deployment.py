"""The Deployment controller.

``plan`` is a pure function that follows the real controller's sync step by step
(paused and scaling syncs, RollingUpdate, Recreate, status and Progressing/Available
conditions, revision bookkeeping, history cleanup) on working copies of the
Deployment's ReplicaSets, and returns the writes it decided on. The controller executes
them in order; a status write is made only when the status changed.
"""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from .common import (
    BATCH_SECONDS,
    Informer,
    Key,
    Obj,
    Recorder,
    WorkQueue,
    add_seconds,
    canonical_json,
    error_code,
    fmt_time,
    is_terminating,
    key_of,
    log,
    meta,
    now_utc,
    omit_zero,
    owner_reference,
    parse_time,
    run_worker,
    seconds_until,
    status_patch,
    uid_of,
)
from .replicaset import NAME_ALPHABET, refresh

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
HASH_LABEL = "pod-template-hash"
# annotations of a Deployment that are not copied onto its ReplicaSets
NOT_COPIED = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
}

NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"

STATUS_FIELDS = (
    "observedGeneration",
    "replicas",
    "updatedReplicas",
    "readyReplicas",
    "availableReplicas",
    "unavailableReplicas",
    "terminatingReplicas",
    "conditions",
    "collisionCount",
)

NO_DEADLINE = 2**31 - 1


# ------------------------------------------------------------------ spec helpers


def replicas_of(d: Mapping[str, Any]) -> int:
    value = (d.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def strategy_of(d: Mapping[str, Any]) -> dict[str, Any]:
    return (d.get("spec") or {}).get("strategy") or {"type": "RollingUpdate"}


def is_rolling(d: Mapping[str, Any]) -> bool:
    return (strategy_of(d).get("type") or "RollingUpdate") == "RollingUpdate"


def progress_deadline(d: Mapping[str, Any]) -> int | None:
    value = (d.get("spec") or {}).get("progressDeadlineSeconds")
    value = 600 if value is None else int(value)
    return None if value == NO_DEADLINE else value


def scaled_value(value: int | str | None, total: int, round_up: bool) -> int:
    """An IntOrString of a rolling update ('25%' or 1) resolved against ``total``."""
    if value is None:
        value = "25%"
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not text.endswith("%"):
        return int(text)
    percent = int(text[:-1])
    exact = percent * total / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def resolve_fenceposts(d: Mapping[str, Any]) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as the real controller resolves them: surge rounds up,
    unavailable rounds down, and both zero means one may be unavailable."""
    rolling = strategy_of(d).get("rollingUpdate") or {}
    desired = replicas_of(d)
    surge = scaled_value(rolling.get("maxSurge"), desired, True)
    unavailable = scaled_value(rolling.get("maxUnavailable"), desired, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_surge(d: Mapping[str, Any]) -> int:
    return resolve_fenceposts(d)[0] if is_rolling(d) else 0


def max_unavailable(d: Mapping[str, Any]) -> int:
    if not is_rolling(d) or replicas_of(d) == 0:
        return 0
    return min(resolve_fenceposts(d)[1], replicas_of(d))


# ------------------------------------------------------------------ template hash


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for byte in data:
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def template_hash(template: Mapping[str, Any], collision_count: int | None = None) -> str:
    """A short, stable, DNS-safe hash of a pod template, as in ``pod-template-hash``."""
    text = canonical_json(template)
    if collision_count:
        text += f"#{collision_count}"
    digits = str(fnv32a(text.encode()))
    return "".join(NAME_ALPHABET[int(ch) % len(NAME_ALPHABET)] for ch in digits)


def same_template(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal pod templates, ignoring the pod-template-hash label (no copies: this runs
    for every ReplicaSet of a Deployment on every sync)."""
    if set(a) - {"metadata"} != set(b) - {"metadata"}:
        return False
    if any(a[k] != b[k] for k in a if k != "metadata"):
        return False
    ma, mb = a.get("metadata") or {}, b.get("metadata") or {}
    if set(ma) - {"labels"} != set(mb) - {"labels"} or any(
        ma[k] != mb[k] for k in ma if k != "labels"
    ):
        return False
    la, lb = ma.get("labels") or {}, mb.get("labels") or {}
    return {k: v for k, v in la.items() if k != HASH_LABEL} == {
        k: v for k, v in lb.items() if k != HASH_LABEL
    }


def template_without_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    t = copy.deepcopy(dict(template))
    labels = (t.get("metadata") or {}).get("labels")
    if labels and HASH_LABEL in labels:
        del labels[HASH_LABEL]
    return t


# ------------------------------------------------------------------------ model


@dataclass
class RS:
    """A working copy of the parts of a ReplicaSet the planner reads and changes."""

    name: str
    replicas: int
    annotations: dict[str, str]
    status: dict[str, Any]
    created: str = ""
    template: dict[str, Any] = field(default_factory=dict)
    obj: dict[str, Any] | None = None
    pods_alive: int = 0  # pods not yet gone (Recreate waits for zero)

    @classmethod
    def of(cls, obj: Mapping[str, Any], pods_alive: int = 0) -> RS:
        return cls(
            name=meta(obj)["name"],
            replicas=int((obj.get("spec") or {}).get("replicas", 1) or 0),
            annotations=dict(meta(obj).get("annotations") or {}),
            status=dict(obj.get("status") or {}),
            created=meta(obj).get("creationTimestamp") or "",
            template=(obj.get("spec") or {}).get("template") or {},
            obj=dict(obj),
            pods_alive=pods_alive,
        )

    def stat(self, name: str) -> int:
        return int(self.status.get(name) or 0)

    def revision(self) -> int:
        try:
            return int(self.annotations.get(REVISION, "0"))
        except ValueError:
            return 0


@dataclass
class Plan:
    create: list[dict[str, Any]] = field(default_factory=list)
    # ordered writes: ("scale", name, replicas, annotations, old_replicas) | ("annotate", name, annotations) | ("delete", name)
    rs_writes: list[tuple[Any, ...]] = field(default_factory=list)
    deployment_annotations: dict[str, str] | None = None
    status: dict[str, Any] | None = None  # full new status when it changed
    requeue_after: float | None = None
    collision: bool = False


def total_replicas(rss: list[RS]) -> int:
    return sum(r.replicas for r in rss)


def active(rss: list[RS]) -> list[RS]:
    return [r for r in rss if r.replicas > 0]


def new_rs_new_replicas(d: Mapping[str, Any], all_rss: list[RS], new: RS) -> int:
    desired = replicas_of(d)
    if not is_rolling(d):
        return desired
    max_total = desired + resolve_fenceposts(d)[0]
    current = total_replicas(all_rss)
    if current >= max_total:
        return new.replicas
    scale_up = min(max_total - current, desired - new.replicas)
    return new.replicas + scale_up


def get_condition(status: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind:
            return cast(dict[str, Any], cond)
    return None


def new_condition(
    kind: str, status: str, reason: str, message: str, now: datetime
) -> dict[str, Any]:
    ts = fmt_time(now)
    return {
        "type": kind,
        "status": status,
        "lastUpdateTime": ts,
        "lastTransitionTime": ts,
        "reason": reason,
        "message": message,
    }


def set_condition(status: dict[str, Any], cond: dict[str, Any]) -> None:
    current = get_condition(status, cond["type"])
    if (
        current is not None
        and current.get("status") == cond["status"]
        and current.get("reason") == cond["reason"]
    ):
        return
    if current is not None and current.get("status") == cond["status"]:
        cond = {**cond, "lastTransitionTime": current.get("lastTransitionTime")}
    status["conditions"] = [
        c for c in status.get("conditions") or [] if c.get("type") != cond["type"]
    ] + [cond]


def remove_condition(status: dict[str, Any], kind: str) -> None:
    status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != kind]


def calculate_status(
    d: Mapping[str, Any],
    all_rss: list[RS],
    new: RS | None,
    now: datetime,
    current: Mapping[str, Any],
) -> dict[str, Any]:
    available = sum(r.stat("availableReplicas") for r in all_rss)
    unavailable = max(total_replicas(all_rss) - available, 0)
    status: dict[str, Any] = {
        "observedGeneration": meta(d).get("generation") or 1,
        "replicas": sum(r.stat("replicas") for r in all_rss),
        "updatedReplicas": new.stat("replicas") if new else 0,
        "readyReplicas": sum(r.stat("readyReplicas") for r in all_rss),
        "availableReplicas": available,
        "unavailableReplicas": unavailable,
        "terminatingReplicas": sum(r.stat("terminatingReplicas") for r in all_rss),
        "collisionCount": current.get("collisionCount"),
        "conditions": [dict(c) for c in current.get("conditions") or []],
    }
    if available >= replicas_of(d) - max_unavailable(d):
        set_condition(
            status,
            new_condition(
                "Available", "True", MIN_AVAILABLE, "Deployment has minimum availability.", now
            ),
        )
    else:
        set_condition(
            status,
            new_condition(
                "Available",
                "False",
                MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.",
                now,
            ),
        )
    return status


def deployment_complete(d: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    n = replicas_of(d)
    return (
        (status.get("updatedReplicas") or 0) == n
        and (status.get("replicas") or 0) == n
        and (status.get("availableReplicas") or 0) == n
        and (status.get("observedGeneration") or 0) >= (meta(d).get("generation") or 1)
    )


def deployment_progressing(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    def g(s: Mapping[str, Any], k: str) -> int:
        return int(s.get(k) or 0)

    return (
        g(new, "updatedReplicas") > g(old, "updatedReplicas")
        or g(new, "replicas") - g(new, "updatedReplicas")
        < g(old, "replicas") - g(old, "updatedReplicas")
        or g(new, "readyReplicas") > g(old, "readyReplicas")
        or g(new, "availableReplicas") > g(old, "availableReplicas")
    )


def deployment_timed_out(d: Mapping[str, Any], status: Mapping[str, Any], now: datetime) -> bool:
    deadline = progress_deadline(d)
    cond = get_condition(status, "Progressing")
    if deadline is None or cond is None:
        return False
    if cond.get("reason") == NEW_RS_AVAILABLE:
        return False
    if cond.get("reason") == TIMED_OUT:
        return True
    since = parse_time(cond.get("lastUpdateTime"))
    return since is not None and add_seconds(since, deadline) < now


def normalized(status: Mapping[str, Any]) -> dict[str, Any]:
    return omit_zero({k: status.get(k) for k in STATUS_FIELDS})


# ------------------------------------------------------------------------- planner


class Planner:
    """One sync of one Deployment, in the real controller's order, on working copies."""

    def __init__(self, d: Mapping[str, Any], rss: list[RS], now: datetime):
        self.d = d
        self.now = now
        self.rss = sorted(rss, key=lambda r: (r.created, r.name))
        self.status: dict[str, Any] = copy.deepcopy(dict(d.get("status") or {}))
        self.plan = Plan()
        self.annotations = dict(meta(d).get("annotations") or {})
        self.template = (d.get("spec") or {}).get("template") or {}
        self.hash = template_hash(self.template, self.status.get("collisionCount"))

    # -- replica sets

    def is_new(self, rs: RS) -> bool:
        if (rs.template.get("metadata") or {}).get("labels", {}).get(HASH_LABEL) == self.hash:
            return True
        return same_template(rs.template, self.template)

    def split(self) -> tuple[RS | None, list[RS]]:
        new = next((r for r in self.rss if self.is_new(r)), None)
        return new, [r for r in self.rss if r is not new]

    def scale(self, rs: RS, replicas: int) -> bool:
        """Scale ``rs`` (and stamp the desired/max annotations); True if its size changed."""
        desired = replicas_of(self.d)
        annotations = {
            DESIRED_REPLICAS: str(desired),
            MAX_REPLICAS: str(desired + max_surge(self.d)),
        }
        size_changes = rs.replicas != replicas
        needs = {k: v for k, v in annotations.items() if rs.annotations.get(k) != v}
        if size_changes or needs:
            self.plan.rs_writes.append(("scale", rs.name, replicas, annotations, rs.replicas))
            rs.annotations.update(annotations)
            rs.replicas = replicas
        return size_changes

    def new_replica_set(self, olds: list[RS], create: bool) -> RS | None:
        """Find the new ReplicaSet (syncing its revision) or create it."""
        existing, _ = self.split()
        max_old = max((r.revision() for r in olds), default=0)
        revision = str(max_old + 1)
        deadline = progress_deadline(self.d) is not None
        if existing is not None:
            updates: dict[str, str] = {}
            if existing.revision() < max_old + 1:
                updates[REVISION] = revision
                old_rev = existing.annotations.get(REVISION)
                if old_rev:
                    history = [
                        h for h in existing.annotations.get(REVISION_HISTORY, "").split(",") if h
                    ]
                    updates[REVISION_HISTORY] = ",".join([*history, old_rev])
            if updates:
                existing.annotations.update(updates)
                self.plan.rs_writes.append(("annotate", existing.name, updates))
            self.sync_revision(existing.annotations.get(REVISION, revision))
            if deadline and get_condition(self.status, "Progressing") is None:
                set_condition(
                    self.status,
                    new_condition(
                        "Progressing",
                        "True",
                        FOUND_NEW_RS,
                        f'Found new replica set "{existing.name}"',
                        self.now,
                    ),
                )
            return existing
        if not create:
            return None
        ns, dname = key_of(self.d)
        labels = dict((self.template.get("metadata") or {}).get("labels") or {})
        labels[HASH_LABEL] = self.hash
        template = copy.deepcopy(dict(self.template))
        template.setdefault("metadata", {})["labels"] = labels
        selector = copy.deepcopy((self.d.get("spec") or {}).get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = self.hash
        name = f"{dname}-{self.hash}"
        annotations = {k: v for k, v in self.annotations.items() if k not in NOT_COPIED}
        desired = replicas_of(self.d)
        annotations.update(
            {
                REVISION: revision,
                DESIRED_REPLICAS: str(desired),
                MAX_REPLICAS: str(desired + max_surge(self.d)),
            }
        )
        new = RS(
            name=name,
            replicas=0,
            annotations=annotations,
            status={},
            created="~" + self.hash,
            template=template,
        )
        replicas = new_rs_new_replicas(self.d, [*olds, new], new)
        new.replicas = replicas
        spec: dict[str, Any] = {"replicas": replicas, "selector": selector, "template": template}
        min_ready = (self.d.get("spec") or {}).get("minReadySeconds")
        if min_ready:
            spec["minReadySeconds"] = min_ready
        obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [owner_reference(self.d, "apps/v1", "Deployment")],
            },
            "spec": spec,
        }
        self.plan.create.append(obj)
        self.rss.append(new)
        self.sync_revision(revision)
        if deadline:
            set_condition(
                self.status,
                new_condition(
                    "Progressing",
                    "True",
                    NEW_RS_CREATED,
                    f'Created new replica set "{name}"',
                    self.now,
                ),
            )
        return new

    def sync_revision(self, revision: str) -> None:
        if self.annotations.get(REVISION) != revision:
            self.annotations[REVISION] = revision
            self.plan.deployment_annotations = {REVISION: revision}

    # -- the syncs

    def run(self) -> Plan:
        d = self.d
        if is_terminating(d):
            new, _ = self.new_replica_set_split(create=False)
            self.sync_status(new)
            return self.plan
        self.check_paused_conditions()
        spec = d.get("spec") or {}
        if spec.get("paused"):
            self.sync(cleanup=True)
        elif self.is_scaling_event():
            self.sync(cleanup=False)
        elif is_rolling(d):
            self.rollout_rolling()
        else:
            self.rollout_recreate()
        return self.plan

    def new_replica_set_split(self, create: bool) -> tuple[RS | None, list[RS]]:
        _, olds = self.split()
        new = self.new_replica_set(olds, create)
        return new, [r for r in self.rss if r is not new]

    def check_paused_conditions(self) -> None:
        if progress_deadline(self.d) is None:
            return
        cond = get_condition(self.status, "Progressing")
        if cond is not None and cond.get("reason") == TIMED_OUT:
            return
        paused_exists = cond is not None and cond.get("reason") == PAUSED
        if (self.d.get("spec") or {}).get("paused") and not paused_exists:
            set_condition(
                self.status,
                new_condition("Progressing", "Unknown", PAUSED, "Deployment is paused", self.now),
            )
        elif not (self.d.get("spec") or {}).get("paused") and paused_exists:
            set_condition(
                self.status,
                new_condition("Progressing", "Unknown", RESUMED, "Deployment is resumed", self.now),
            )

    def is_scaling_event(self) -> bool:
        new, olds = self.new_replica_set_split(create=False)
        for rs in active([*olds, *([new] if new else [])]):
            desired = rs.annotations.get(DESIRED_REPLICAS)
            if desired is not None and desired.isdigit() and int(desired) != replicas_of(self.d):
                return True
        return False

    def sync(self, cleanup: bool) -> None:
        new, olds = self.new_replica_set_split(create=False)
        self.proportional_scale(new, olds)
        if cleanup:
            self.cleanup(olds)
        self.sync_status(new)

    def proportional_scale(self, new: RS | None, olds: list[RS]) -> None:
        d = self.d
        desired = replicas_of(d)
        everyone = [*olds, *([new] if new else [])]
        actives = active(everyone)
        if len(actives) <= 1:
            target = (
                actives[0]
                if actives
                else (
                    new or (sorted(olds, key=lambda r: (r.created, r.name))[-1] if olds else None)
                )
            )
            if target is not None and target.replicas != desired:
                self.scale(target, desired)
            return
        if (
            new is not None
            and new.replicas == desired
            and new.annotations.get(DESIRED_REPLICAS) == str(desired)
            and new.stat("availableReplicas") == desired
        ):
            for rs in active(olds):
                self.scale(rs, 0)
            return
        if not is_rolling(d):
            return
        allowed = desired + max_surge(d) if desired > 0 else 0
        to_add = allowed - total_replicas(actives)
        if to_add > 0:  # larger first, newer first on ties
            actives.sort(key=lambda r: (-r.replicas, _neg(r.created), r.name))
        elif to_add < 0:  # larger first, older first on ties
            actives.sort(key=lambda r: (-r.replicas, r.created, r.name))
        added = 0
        sizes: dict[str, int] = {}
        for rs in actives:
            if to_add != 0:
                proportion = self.proportion(rs, to_add, added)
                sizes[rs.name] = rs.replicas + proportion
                added += proportion
            else:
                sizes[rs.name] = rs.replicas
        for i, rs in enumerate(actives):
            if i == 0 and to_add != 0:
                sizes[rs.name] = max(sizes[rs.name] + to_add - added, 0)
            self.scale(rs, sizes[rs.name])

    def proportion(self, rs: RS, to_add: int, added: int) -> int:
        if rs.replicas == 0 or to_add == 0 or to_add == added:
            return 0
        d = self.d
        if replicas_of(d) == 0:
            fraction = -rs.replicas
        else:
            max_now = replicas_of(d) + max_surge(d)
            try:
                before = int(rs.annotations.get(MAX_REPLICAS, "0"))
            except ValueError:
                before = 0
            if before == 0:
                before = int(self.status.get("replicas") or 0)
            if before == 0:
                return 0
            exact = rs.replicas * max_now / before
            fraction = math.floor(exact + 0.5) - rs.replicas
        allowed = to_add - added
        return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)

    def rollout_rolling(self) -> None:
        new, olds = self.new_replica_set_split(create=True)
        assert new is not None
        everyone = [*olds, new]
        if self.reconcile_new(everyone, new):
            self.sync_rollout_status(everyone, new)
            return
        if self.reconcile_old(everyone, active(olds), new):
            self.sync_rollout_status(everyone, new)
            return
        interim = calculate_status(self.d, everyone, new, self.now, self.status)
        if deployment_complete(self.d, interim):
            self.cleanup(olds)
        self.sync_rollout_status(everyone, new)

    def reconcile_new(self, everyone: list[RS], new: RS) -> bool:
        desired = replicas_of(self.d)
        if new.replicas == desired:
            return False
        if new.replicas > desired:
            return self.scale(new, desired)
        return self.scale(new, new_rs_new_replicas(self.d, everyone, new))

    def reconcile_old(self, everyone: list[RS], olds: list[RS], new: RS) -> bool:
        if total_replicas(olds) == 0:
            return False
        all_pods = total_replicas(everyone)
        min_available = replicas_of(self.d) - max_unavailable(self.d)
        new_unavailable = new.replicas - new.stat("availableReplicas")
        max_scaled_down = all_pods - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        cleaned = self.cleanup_unhealthy(olds, max_scaled_down)
        scaled = self.scale_down_old(everyone, olds)
        return cleaned + scaled > 0

    def cleanup_unhealthy(self, olds: list[RS], max_cleanup: int) -> int:
        total = 0
        for rs in sorted(olds, key=lambda r: (r.created, r.name)):
            if total >= max_cleanup:
                break
            if rs.replicas == 0:
                continue
            healthy = rs.stat("availableReplicas")
            if healthy == rs.replicas:
                continue
            count = min(max_cleanup - total, rs.replicas - healthy)
            self.scale(rs, rs.replicas - count)
            total += count
        return total

    def scale_down_old(self, everyone: list[RS], olds: list[RS]) -> int:
        min_available = replicas_of(self.d) - max_unavailable(self.d)
        available = sum(r.stat("availableReplicas") for r in everyone)
        if available <= min_available:
            return 0
        budget = available - min_available
        done = 0
        for rs in sorted(olds, key=lambda r: (r.created, r.name)):
            if done >= budget:
                break
            if rs.replicas == 0:
                continue
            count = min(rs.replicas, budget - done)
            self.scale(rs, rs.replicas - count)
            done += count
        return done

    def rollout_recreate(self) -> None:
        new, olds = self.new_replica_set_split(create=False)
        everyone = [*olds, *([new] if new else [])]
        scaled = False
        for rs in active(olds):
            scaled = self.scale(rs, 0) or scaled
        if scaled:
            self.sync_rollout_status(everyone, new)
            return
        if any(r.stat("replicas") > 0 or r.pods_alive > 0 for r in olds):
            self.sync_rollout_status(everyone, new)
            return
        if new is None:
            new, olds = self.new_replica_set_split(create=True)
            everyone = [*olds, *([new] if new else [])]
        assert new is not None
        if new.replicas != replicas_of(self.d):
            self.scale(new, replicas_of(self.d))
        if deployment_complete(self.d, self.status):
            self.cleanup(olds)
        self.sync_rollout_status(everyone, new)

    def cleanup(self, olds: list[RS]) -> None:
        limit = (self.d.get("spec") or {}).get("revisionHistoryLimit")
        limit = 10 if limit is None else int(limit)
        removable = [
            r
            for r in olds
            if r.replicas == 0
            and r.stat("replicas") == 0
            and r.obj is not None
            and not is_terminating(r.obj)
        ]
        excess = len(olds) - limit
        if excess <= 0:
            return
        removable.sort(key=lambda r: (r.revision(), r.created))
        for rs in removable[:excess]:
            self.plan.rs_writes.append(("delete", rs.name))

    # -- status

    def finish(self, status: dict[str, Any]) -> None:
        current = normalized(self.d.get("status") or {})
        if normalized(status) != current:
            self.plan.status = normalized(status)

    def sync_status(self, new: RS | None) -> None:
        self.finish(calculate_status(self.d, self.rss, new, self.now, self.status))

    def sync_rollout_status(self, everyone: list[RS], new: RS | None) -> None:
        d = self.d
        status = calculate_status(d, everyone, new, self.now, self.status)
        deadline = progress_deadline(d)
        if deadline is None:
            remove_condition(status, "Progressing")
        current = get_condition(self.status, "Progressing")
        complete_before = (
            status.get("replicas") == status.get("updatedReplicas")
            and current is not None
            and current.get("reason") == NEW_RS_AVAILABLE
        )
        name = new.name if new else ""
        if deadline is not None and not complete_before:
            if deployment_complete(d, status):
                set_condition(
                    status,
                    new_condition(
                        "Progressing",
                        "True",
                        NEW_RS_AVAILABLE,
                        f'ReplicaSet "{name}" has successfully progressed.',
                        self.now,
                    ),
                )
            elif deployment_progressing(d.get("status") or {}, status):
                cond = new_condition(
                    "Progressing",
                    "True",
                    RS_UPDATED,
                    f'ReplicaSet "{name}" is progressing.',
                    self.now,
                )
                if current is not None:
                    if current.get("status") == "True":
                        cond["lastTransitionTime"] = current.get("lastTransitionTime")
                    remove_condition(status, "Progressing")
                set_condition(status, cond)
            elif deployment_timed_out(d, status, self.now):
                set_condition(
                    status,
                    new_condition(
                        "Progressing",
                        "False",
                        TIMED_OUT,
                        f'ReplicaSet "{name}" has timed out progressing.',
                        self.now,
                    ),
                )
        self.finish(status)
        # Look again when the deadline would pass without progress.
        progressing = get_condition(status, "Progressing")
        if (
            deadline is not None
            and progressing is not None
            and progressing.get("reason") not in (TIMED_OUT, NEW_RS_AVAILABLE)
            and not deployment_complete(d, status)
        ):
            since = parse_time(progressing.get("lastUpdateTime"))
            if since is not None:
                # +1s: lastUpdateTime has second precision
                self.plan.requeue_after = max(
                    seconds_until(add_seconds(since, deadline + 1), self.now), 0.1
                )


def _neg(text: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in text)


def plan(d: Mapping[str, Any], rss: list[RS], now: datetime) -> Plan:
    """The writes one sync of Deployment ``d`` makes, given its ReplicaSets."""
    return Planner(d, rss, now).run()


# ----------------------------------------------------------------------- controller


class DeploymentController:
    def __init__(
        self,
        cluster: Any,
        deployments: Informer,
        replicasets: Informer,
        pods: Informer,
        events: Recorder,
    ):
        self.cluster = cluster
        self.deployments = deployments
        self.replicasets = replicasets
        self.pods = pods
        self.events = events
        self.queue = WorkQueue()
        deployments.add_handler(self._on_deployment)
        replicasets.add_handler(self._on_rs)
        pods.add_handler(self._on_pod)

    def tasks(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(
                run_worker(
                    "deployment",
                    self.queue,
                    self.reconcile,
                    [self.deployments, self.replicasets, self.pods],
                ),
                name="localcluster-deployment",
            )
        ]

    def _on_deployment(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        if (
            old is not None
            and new is not None
            and old.get("spec") == new.get("spec")
            and meta(old).get("deletionTimestamp") == meta(new).get("deletionTimestamp")
            and (meta(old).get("annotations") or {}) == (meta(new).get("annotations") or {})
        ):
            return  # a status write (ours)
        self.queue.add(key_of(new or old or {}))

    def _enqueue_owner_of(self, rs: Mapping[str, Any]) -> None:
        for ref in meta(rs).get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") == "Deployment":
                self.queue.add_after(
                    (meta(rs).get("namespace") or "", ref.get("name")), BATCH_SECONDS
                )

    def _on_rs(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        self._enqueue_owner_of(new or old or {})

    def _on_pod(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        # Recreate waits until the old pods are gone, which changes no ReplicaSet status.
        if event_type != "DELETED" or old is None:
            return
        for ref in meta(old).get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") == "ReplicaSet":
                for rs in self.replicasets.by_index("uid", ref.get("uid")):
                    self._enqueue_owner_of(rs)

    async def reconcile(self, key: Key) -> None:
        d = self.deployments.get(*key)
        if d is None:
            return
        ns, name = key
        owned = self.replicasets.by_index("controller", uid_of(d))
        rss = [
            RS.of(r, pods_alive=len(self.pods.keys_by_index("controller", uid_of(r))))
            for r in owned
        ]
        now = now_utc()
        result = plan(d, rss, now)
        by_name = {meta(r)["name"]: r for r in owned}
        for obj in result.create:
            try:
                created = await self.cluster.create("apps/v1/replicasets", obj)
            except Exception as exc:
                if error_code(exc) != 409:
                    raise
                await self._collision(d, obj)
                return
            self.replicasets.observe(created)
            by_name[created["metadata"]["name"]] = created
            log.info("Created ReplicaSet %s/%s", ns, created["metadata"]["name"])
            replicas = (obj.get("spec") or {}).get("replicas") or 0
            if replicas > 0:
                await self.events.record(
                    d,
                    "Deployment",
                    "apps/v1",
                    "Normal",
                    "ScalingReplicaSet",
                    f"Scaled up replica set {created['metadata']['name']} from 0 to {replicas}",
                    now,
                )
        for write in result.rs_writes:
            if write[0] == "scale":
                _, rs_name, replicas, annotations, before = write
                updated = await self.cluster.patch(
                    "apps/v1/replicasets",
                    ns,
                    rs_name,
                    {"metadata": {"annotations": annotations}, "spec": {"replicas": replicas}},
                )
                self.replicasets.observe(updated)
                if replicas != before:
                    direction = "up" if replicas > before else "down"
                    log.info(
                        "Scaled %s ReplicaSet %s/%s from %d to %d",
                        direction,
                        ns,
                        rs_name,
                        before,
                        replicas,
                    )
                    await self.events.record(
                        d,
                        "Deployment",
                        "apps/v1",
                        "Normal",
                        "ScalingReplicaSet",
                        f"Scaled {direction} replica set {rs_name} from {before} to {replicas}",
                        now,
                    )
            elif write[0] == "annotate":
                updated = await self.cluster.patch(
                    "apps/v1/replicasets", ns, write[1], {"metadata": {"annotations": write[2]}}
                )
                self.replicasets.observe(updated)
            elif write[0] == "delete":
                try:
                    await self.cluster.delete("apps/v1/replicasets", ns, write[1])
                except Exception as exc:
                    if error_code(exc) != 404:
                        raise
                if write[1] in by_name:
                    await refresh(
                        self.cluster, self.replicasets, "apps/v1/replicasets", by_name[write[1]]
                    )
                log.info("Deleted old ReplicaSet %s/%s", ns, write[1])
        if result.deployment_annotations:
            updated = await self.cluster.patch(
                "apps/v1/deployments",
                ns,
                name,
                {"metadata": {"annotations": result.deployment_annotations}},
            )
            self.deployments.observe(updated)
            d = updated
        if result.status is not None:
            patch = status_patch(d.get("status"), result.status, STATUS_FIELDS)
            if patch:
                updated = await self.cluster.patch(
                    "apps/v1/deployments", ns, name, {"status": patch}, subresource="status"
                )
                self.deployments.observe(updated)
        if result.requeue_after is not None:
            self.queue.add_after(key, result.requeue_after)

    async def _collision(self, d: Obj, obj: Obj) -> None:
        """The name of the new ReplicaSet is taken. If it is ours with our template the
        cache was behind; otherwise bump collisionCount so the next hash differs."""
        ns = meta(d).get("namespace")
        name = obj["metadata"]["name"]
        try:
            existing = await self.cluster.get("apps/v1/replicasets", ns, name)
        except Exception as exc:
            if error_code(exc) == 404:
                raise RuntimeError(f"ReplicaSet {ns}/{name} vanished during creation") from None
            raise
        mine = any(
            ref.get("uid") == uid_of(d) for ref in meta(existing).get("ownerReferences") or []
        )
        if mine and template_without_hash(
            (existing.get("spec") or {}).get("template") or {}
        ) == template_without_hash(obj["spec"]["template"]):
            self.replicasets.observe(existing)
            self.queue.add(key_of(d))
            return
        count = int((d.get("status") or {}).get("collisionCount") or 0) + 1
        updated = await self.cluster.patch(
            "apps/v1/deployments",
            ns,
            meta(d)["name"],
            {"status": {"collisionCount": count}},
            subresource="status",
        )
        self.deployments.observe(updated)
        log.info(
            "Found hash collision for Deployment %s/%s, collisionCount is now %d",
            ns,
            meta(d)["name"],
            count,
        )
        self.queue.add(key_of(d))
