"""What the engine reads from the cluster: observed children and pods, as plain data.

Pure functions from manifests to the engine's inputs: which children an InferenceService
owns, each revision's Deployment counts and pod troubles, the manual rollout controls.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tfleet.api.vocabulary import (
    ANNOTATION_ABORT,
    ANNOTATION_PAUSED,
    ANNOTATION_PROMOTE,
    ANNOTATION_RETRY,
    LABEL_MODEL_VERSION,
    LABEL_REVISION,
    SERVING_CONTAINER,
)
from tfleet.engine import rollout

Manifest = dict[str, Any]
ChildKey = tuple[str, str]  # (kind, name)


@dataclass(frozen=True)
class PodSummary:
    """What the rollout engine needs to know about one serving pod."""

    revision: str
    name: str = ""
    ip: str = ""
    ready: bool = False
    restarts: int = 0
    crash_looping: bool = False
    image_pull_failing: bool = False
    unpullable_image: str = ""  # the image it fails to pull
    unschedulable: str | None = None  # the scheduler's reason and message (PodScheduled=False)
    # TF Serving's own load error: from the serving container's termination message (a failed
    # first load ends the server), or as the pod's health bridge reported it (a later load).
    load_error: str = ""
    # Why the pod's pre-flight failed, as its health bridge reported it (golden requests that
    # failed or came back wrong): the pod stays unready.
    preflight_error: str = ""
    # The version its health bridge says it serves; asked only of unpinned revisions' ready pods
    # (a pinned revision serves its label's version, or it is not ready).
    served_version: int | None = None


# tensorflow_serving/model_servers/main.cc prints "Failed to start server. Error: <status>"
# when Server::BuildAndStart fails; for a first load that failed, the status lists each
# servable: "... did not become available: {{{name: m version: 3} due to error: <error>}, }".
_START_FAILURE = "Failed to start server."
_DUE_TO = " due to error: "
_CLOSING = re.compile(r"^(?P<error>.*?)\}(?:, \})?\s*$", re.S)
# The next servable of the list, when there are several (tfleet configures one).
_NEXT_SERVABLE = "}, {{"


def startup_load_error(termination_message: str) -> str:
    """TF Serving's load error in a container's termination message; "" when it holds none."""
    for line in reversed(termination_message.splitlines()):
        if _START_FAILURE in line and _DUE_TO in line:
            error = line.split(_DUE_TO, 1)[1].strip().split(_NEXT_SERVABLE, 1)[0]
            closed = _CLOSING.match(error)
            return closed.group("error").strip() if closed else error
    return ""


def _termination_message(status: Manifest) -> str:
    """The message of the serving container's failed exit, while it has not started again: a
    container that runs now may well have loaded its model this time."""
    if (status.get("state") or {}).get("running") is not None:
        return ""
    for state in (status.get("state") or {}, status.get("lastState") or {}):
        terminated = state.get("terminated") or {}
        if terminated.get("message") and terminated.get("exitCode") != 0:
            return str(terminated["message"])
    return ""


# The kubelet's waiting reasons of a container whose image cannot be pulled
# (pkg/kubelet/images/types.go: ErrImagePull, ImagePullBackOff, ErrImageNeverPull, InvalidImageName).
_IMAGE_PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName")


def _not_scheduled(scheduled: Manifest) -> str | None:
    """Why the scheduler has not placed a pod (its PodScheduled=False condition): its message,
    with the reason when it is not the usual Unschedulable (SchedulingGated, for example)."""
    if scheduled.get("status") != "False":
        return None
    reason, message = str(scheduled.get("reason") or ""), str(scheduled.get("message") or "")
    if reason in ("", "Unschedulable"):
        return message or "unschedulable"
    return f"{reason}: {message}" if message else reason


def summarize_pod(pod: Manifest) -> PodSummary | None:
    meta = pod.get("metadata") or {}
    revision = (meta.get("labels") or {}).get(LABEL_REVISION)
    if not revision or meta.get("deletionTimestamp"):
        return None
    st = pod.get("status") or {}
    conditions = {c.get("type"): c for c in st.get("conditions") or []}
    statuses = list(st.get("containerStatuses") or []) + list(st.get("initContainerStatuses") or [])
    waiting = [((c.get("state") or {}).get("waiting") or {}).get("reason", "") for c in statuses]
    unpullable = [str(c.get("image") or "") for c, reason in zip(statuses, waiting, strict=True)
                  if reason in _IMAGE_PULL_FAILURES]
    scheduled = conditions.get("PodScheduled") or {}
    serving = [c for c in st.get("containerStatuses") or [] if c.get("name") == SERVING_CONTAINER]
    load_error = startup_load_error(_termination_message(serving[0])) if serving else ""
    return PodSummary(
        revision=revision,
        name=meta.get("name", ""),
        ip=st.get("podIP") or "",
        ready=(conditions.get("Ready") or {}).get("status") == "True",
        restarts=sum(int(c.get("restartCount") or 0) for c in statuses),
        crash_looping="CrashLoopBackOff" in waiting,
        image_pull_failing=bool(unpullable),
        unpullable_image=next((image for image in unpullable if image), ""),
        unschedulable=_not_scheduled(scheduled),
        load_error=load_error,
    )


def child_key(obj: Manifest) -> ChildKey:
    return obj["kind"], obj["metadata"]["name"]


def _is_owned_by(obj: Manifest, uid: str) -> bool:
    return any(ref.get("uid") == uid and ref.get("controller") for ref in obj["metadata"].get("ownerReferences") or [])


def owned_children(body: Manifest, children: dict[ChildKey, Manifest]) -> dict[ChildKey, Manifest]:
    uid = (body.get("metadata") or {}).get("uid", "")
    return {k: v for k, v in children.items() if _is_owned_by(v, uid)}


def revision_of(obj: Manifest) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_REVISION)


def observe_revisions(
    deployments: list[Manifest], pods: list[PodSummary]
) -> dict[str, rollout.Observed]:
    """Per revision: its Deployment's counts and its pods' troubles."""
    by_revision: dict[str, rollout.Observed] = {}
    pods_by_revision: dict[str, list[PodSummary]] = {}
    for pod in pods:
        pods_by_revision.setdefault(pod.revision, []).append(pod)
    for dep in deployments:
        rev = revision_of(dep)
        if rev is None:
            continue
        st = dep.get("status") or {}
        meta = dep.get("metadata") or {}
        conditions = {c.get("type"): c for c in st.get("conditions") or []}
        mine = pods_by_revision.get(rev, [])
        unschedulable = [p.unschedulable for p in mine if p.unschedulable]
        unpullable = [p.unpullable_image for p in mine if p.unpullable_image]
        load_errors = [p.load_error for p in mine if p.load_error]
        preflight_errors = [p.preflight_error for p in mine if p.preflight_error]
        label = (meta.get("labels") or {}).get(LABEL_MODEL_VERSION)
        pinned = int(label) if label and label.isdigit() else None
        served = Counter(p.served_version for p in mine if p.ready and p.served_version is not None)
        by_revision[rev] = rollout.Observed(
            replicas=int((dep.get("spec") or {}).get("replicas", 1)),
            ready=int(st.get("readyReplicas") or 0),
            updated=int(st.get("updatedReplicas") or 0),
            current=int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0),
            pods=int(st.get("replicas") or 0),
            restarts=sum(p.restarts for p in mine),
            crash_looping=sum(p.crash_looping for p in mine),
            image_pull_failing=sum(p.image_pull_failing for p in mine),
            unpullable_image=Counter(unpullable).most_common(1)[0][0] if unpullable else "",
            unschedulable=len(unschedulable),
            unschedulable_message=Counter(unschedulable).most_common(1)[0][0] if unschedulable else "",
            version=pinned if pinned is not None else (served.most_common(1)[0][0] if served else None),
            served=tuple(sorted(served.items())) if pinned is None else (),
            load_error=Counter(load_errors).most_common(1)[0][0] if load_errors else "",
            preflight_error=Counter(preflight_errors).most_common(1)[0][0] if preflight_errors else "",
            deadline_exceeded=(conditions.get("Progressing") or {}).get("reason") == "ProgressDeadlineExceeded",
        )
    return by_revision


def controls(body: Manifest) -> rollout.Controls:
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return rollout.Controls(
        paused=annotations.get(ANNOTATION_PAUSED, "").lower() == "true",
        promote=annotations.get(ANNOTATION_PROMOTE) or None,
        abort=annotations.get(ANNOTATION_ABORT) or None,
        retry=annotations.get(ANNOTATION_RETRY) or None,
    )




def spent_controls(body: Manifest) -> list[str]:
    """Promote, abort and retry annotations whose act the recorded status shows done: a promote
    or abort names a revision that is no longer the canary (promoted to stable, or rolled
    back), a retry one that is no longer the rolled-back revision. Left in place, an abort
    would abort that revision again the next time the spec asks for it."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    rollout = (body.get("status") or {}).get("rollout") or {}
    targets = {ANNOTATION_PROMOTE: rollout.get("canaryRevision") or rollout.get("queuedRevision"),
               ANNOTATION_ABORT: rollout.get("canaryRevision") or rollout.get("queuedRevision"),
               ANNOTATION_RETRY: rollout.get("failedRevision")}
    return [key for key, target in targets.items() if annotations.get(key) and annotations[key] != target]
