"""tfleet's vocabulary: every name that crosses a process boundary, in one place.

The API group and kind, the labels and annotations tfleet puts on objects or reads from
them, its field manager, and the words of its status (rollout phases, condition types and
reasons). Other modules, the CLI included, spell none of these out themselves. Phases,
condition types and reasons are `StrEnum`s: they compare and serialise as plain strings.
"""

from __future__ import annotations

from enum import StrEnum

GROUP = "tfleet.dev"
VERSION = "v1alpha1"
KIND = "InferenceService"
PLURAL = "inferenceservices"
API_VERSION = f"{GROUP}/{VERSION}"
# The cluster's defaults for InferenceServices: one cluster-scoped object, named DEFAULTS_NAME.
DEFAULTS_KIND = "InferenceServiceDefaults"
DEFAULTS_PLURAL = "inferenceservicedefaults"
DEFAULTS_NAME = "cluster"
# Events about a cluster-scoped object live in this namespace (the API server accepts no other,
# k8s.io/kubernetes pkg/apis/core/validation/events.go, legacyValidateEvent).
CLUSTER_EVENTS_NAMESPACE = "default"

# The field manager of every server-side apply, the source of Events, the user agent.
MANAGER = "tfleet"

# The TF Serving container of every serving pod.
SERVING_CONTAINER = "tensorflow-serving"

# Labels on every child and serving pod.
LABEL_ISVC = "tfleet.dev/inferenceservice"
LABEL_REVISION = "tfleet.dev/revision"
LABEL_STRATEGY = "tfleet.dev/strategy"
LABEL_MODEL_VERSION = "tfleet.dev/model-version"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"

# Annotations tfleet writes.
ANNOTATION_CONFIG_CHECKSUM = "tfleet.dev/config-checksum"
ANNOTATION_APPLIED = "tfleet.dev/applied-hash"
# On a revision's Deployment: the parts of the InferenceService spec that made it (all but
# replicas, autoscaling, service and rollout), so `tfleet rollout undo` can put them back.
ANNOTATION_REVISION_SPEC = "tfleet.dev/revision-spec"
# On an Event: which report last counted it, so a retried write whose response was lost is
# recognised as its own and not counted twice.
ANNOTATION_EVENT_REPORT = "tfleet.dev/event-report"
# Manual rollout control (see `tfleet rollout`): promote and abort name the canary revision,
# so a stale annotation never acts on a later rollout.
ANNOTATION_PAUSED = "tfleet.dev/rollout-paused"
ANNOTATION_PROMOTE = "tfleet.dev/rollout-promote"
ANNOTATION_ABORT = "tfleet.dev/rollout-abort"
ANNOTATION_RETRY = "tfleet.dev/rollout-retry"  # names a rolled-back revision to try again


def isvc_selector(name: str) -> str:
    """The label selector of every child and pod of one InferenceService."""
    return f"{LABEL_ISVC}={name}"


def revision_selector(name: str, revision: str) -> str:
    return f"{isvc_selector(name)},{LABEL_REVISION}={revision}"


class Phase(StrEnum):
    """status.rollout.phase."""

    IDLE = "Idle"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    # A new revision waits for a free rollout slot (the operator's --max-concurrent-rollouts).
    QUEUED = "Queued"


ACTIVE_PHASES = (Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING)


class ConditionType(StrEnum):
    READY = "Ready"
    MODEL_AVAILABLE = "ModelAvailable"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    # kstatus's two "abnormal-true" conditions (sigs.k8s.io/cli-utils/pkg/kstatus), which Flux
    # and kpt read: work toward the current generation goes on / it cannot go on by itself.
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    # The one a CI gate or `kubectl wait` waits for: the current generation's revision serves
    # every replica, with no rollout left.
    ROLLED_OUT = "RolledOut"


class Reason(StrEnum):
    """Condition reasons (PascalCase, as condition reasons must be)."""

    INVALID_SPEC = "InvalidSpec"
    AVAILABLE = "Available"
    SCALED_TO_ZERO = "ScaledToZero"
    MINIMUM_REPLICAS_UNAVAILABLE = "MinimumReplicasUnavailable"
    MODEL_LOADED = "ModelLoaded"
    NO_READY_REPLICAS = "NoReadyReplicas"
    NEW_REPLICA_SET_AVAILABLE = "NewReplicaSetAvailable"
    REPLICA_SET_UPDATED = "ReplicaSetUpdated"
    ROLLOUT_IN_PROGRESS = "RolloutInProgress"
    ROLLOUT_PAUSED = "RolloutPaused"
    ROLLED_BACK = "RolledBack"
    # Why a rollout stopped (Progressing=False): the deadline passed, TF Serving could not load
    # the version, the metric check failed, its pods failed their pre-flight, or someone aborted it.
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    MODEL_LOAD_FAILED = "ModelLoadFailed"
    METRIC_CHECK_FAILED = "MetricCheckFailed"
    PREFLIGHT_FAILED = "PreflightFailed"
    ROLLOUT_ABORTED = "RolloutAborted"
    AS_EXPECTED = "AsExpected"
    RECONCILED = "Reconciled"
    ROLLOUT_QUEUED = "RolloutQueued"
    REPLICAS_NOT_READY = "ReplicasNotReady"
    REVISION_ROLLED_OUT = "RevisionRolledOut"
    # The InferenceServiceDefaults object: in force, or refused (the last accepted one stays).
    ACCEPTED = "Accepted"
    INVALID_DEFAULTS = "InvalidDefaults"


# The reasons a rollout stops for, as status.rollout.reason records them.
ROLLOUT_STOP_REASONS = (Reason.PROGRESS_DEADLINE_EXCEEDED, Reason.MODEL_LOAD_FAILED, Reason.METRIC_CHECK_FAILED,
                        Reason.PREFLIGHT_FAILED, Reason.ROLLOUT_ABORTED)


class EventReason(StrEnum):
    """Reasons of the Events tfleet posts about an InferenceService (users filter on them)."""

    ROLLOUT_STARTED = "RolloutStarted"
    ROLLOUT_SUPERSEDED = "RolloutSuperseded"
    ROLLOUT_CANCELLED = "RolloutCancelled"
    ROLLOUT_STEP_ADVANCED = "RolloutStepAdvanced"
    ROLLOUT_PROMOTING = "RolloutPromoting"
    ROLLOUT_PROMOTED = "RolloutPromoted"
    ROLLOUT_PAUSED = "RolloutPaused"
    ROLLOUT_RESUMED = "RolloutResumed"
    ROLLOUT_SUCCEEDED = "RolloutSucceeded"
    ROLLOUT_ROLLED_BACK = "RolloutRolledBack"
    ROLLOUT_ABORTED = "RolloutAborted"
    ROLLOUT_QUEUED = "RolloutQueued"
    # The metric check could not ask its source (unreachable, or an unusable answer): the step
    # holds until it can, or until the progress deadline.
    METRIC_CHECK_INCONCLUSIVE = "MetricCheckInconclusive"
    CHILDREN_CHANGED = "ChildrenChanged"
    INVALID_SPEC = "InvalidSpec"
    # About the InferenceServiceDefaults object.
    DEFAULTS_ACCEPTED = "DefaultsAccepted"
    INVALID_DEFAULTS = "InvalidDefaults"


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"
