"""The CustomResourceDefinitions, generated from the typed APIs: InferenceService from
`tfleet.api.model`, InferenceServiceDefaults from `tfleet.api.defaults`.

`make manifests` writes them to crds/; a test regenerates them and fails on drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from tfleet.api.defaults import DEFAULTS_NAME_RULE, InferenceServiceDefaultsSpec
from tfleet.api.model import METADATA_NAME_RULE, InferenceServiceSpec
from tfleet.api.schema import ApiObject, Passthrough, field, openapi_schema
from tfleet.api.vocabulary import (
    DEFAULTS_KIND,
    DEFAULTS_NAME,
    DEFAULTS_PLURAL,
    GROUP,
    KIND,
    PLURAL,
    ROLLOUT_STOP_REASONS,
    VERSION,
    Phase,
)

# Plain strings: the CRD is written with yaml.safe_dump, which does not know StrEnums.
ROLLOUT_PHASES = tuple(p.value for p in Phase)
STOP_REASONS = tuple(r.value for r in ROLLOUT_STOP_REASONS)


@dataclass(frozen=True)
class Condition(ApiObject):
    """An observation of one aspect of the InferenceService, in the Kubernetes condition convention."""

    type: str = field("Ready, ModelAvailable, Progressing, Degraded, Reconciling, Stalled or RolledOut "
                      "(docs/conditions.md).", max_length=316)
    status: str = field("True, False or Unknown.", enum=("True", "False", "Unknown"))
    reason: str = field("Why the condition is in this state, in PascalCase.", max_length=1024)
    message: str = field("A human-readable explanation.", max_length=32768)
    last_transition_time: str = field("When the status last changed (RFC 3339).")
    observed_generation: int | None = field(
        "The metadata.generation this condition was computed from.", default=None, minimum=0
    )


@dataclass(frozen=True)
class AnalysisFigures(ApiObject):
    """What one side (the canary's pods or the stable pods) served since the step began, from their TF
    Serving's own metrics."""

    pods: int | None = field("Pods whose health bridge reported figures.", default=None)
    requests: int | None = field("Requests TF Serving answered.", default=None)
    errors: int | None = field("Requests answered with a status other than OK.", default=None)
    error_rate: float | None = field("errors / requests.", default=None)
    p99_latency_milliseconds: float | None = field(
        "The 99th percentile of successful requests' latency, from TF Serving's histogram.", default=None)


@dataclass(frozen=True)
class StepAnalysis(ApiObject):
    """The builtin analysis of one step of the rollout: the last figures of both sides, and the verdict."""

    revision: str | None = field("The canary revision.", default=None)
    step: int | None = field("Index of the step in spec.rollout.steps; absent for the promotion.", default=None)
    weight: int | None = field("The step's weight.", default=None)
    verdict: str | None = field("Passed, Failed, or Pending (not enough traffic yet, or figures missing).",
                                default=None, enum=("Passed", "Failed", "Pending"))
    message: str | None = field("The figures in words, as the rollout message gives them.", default=None)
    canary: AnalysisFigures | None = field("The canary's pods.", default=None)
    stable: AnalysisFigures | None = field("The stable pods.", default=None)
    checked_at: str | None = field("When the figures were read (RFC 3339).", default=None)


@dataclass(frozen=True)
class RolloutStatus(ApiObject):
    """Progress of the current or last rollout."""

    phase: str | None = field("Idle, Queued, Progressing, Paused, Promoting, Succeeded or RolledBack.",
                              default=None, enum=ROLLOUT_PHASES)
    stable_revision: str | None = field("The revision that serves all traffic when no rollout runs.", default=None)
    canary_revision: str | None = field("The revision being rolled out, if any.", default=None)
    target_version: int | None = field("The model version the rollout moves to.", default=None)
    step: int | None = field(
        "Index of the current canary step in spec.rollout.steps, from 0. Messages and Events count "
        "steps from 1 and give the index as well: step 0 of two is \"step 1 of 2 (steps[0])\".",
        default=None,
    )
    weight: int | None = field("Current percentage of replicas on the canary revision.", default=None)
    started_at: str | None = field("When the rollout started (RFC 3339).", default=None)
    step_started_at: str | None = field("When the current step started (RFC 3339).", default=None)
    queued_revision: str | None = field(
        "A revision waiting for a free rollout slot (the operator runs a bounded number of rollouts "
        "at once); the rollout starts when one frees, in the order they were queued.", default=None
    )
    queued_at: str | None = field("When the queued revision was queued (RFC 3339).", default=None)
    failed_revision: str | None = field(
        "A revision that was rolled back; it is not tried again until the spec changes.", default=None
    )
    canary_restarts: int | None = field(
        "Canary container restarts counted when the current step began; a restart during the "
        "step holds the rollout.",
        default=None,
    )
    history: tuple[str, ...] = field(
        "Earlier stable revisions, newest first, kept scaled to zero for a fast rollback.", default=()
    )
    stalled: bool | None = field(
        "True while the rollout is stuck and waits for a person: past its progress deadline or "
        "failing its metric check, with autoRollback off.",
        default=None,
    )
    reason: str | None = field(
        "Why the rollout stopped, while it is RolledBack or stalled; also the reason of the "
        "Progressing=False condition.",
        default=None, enum=STOP_REASONS,
    )
    message: str | None = field("What the rollout is doing or why it stopped.", default=None)
    analysis: tuple[StepAnalysis, ...] = field(
        "The builtin analysis (spec.rollout.analysis.builtin) of the current or last rollout, one entry per "
        "step and one for the promotion.", default=())


@dataclass(frozen=True)
class ServedVersion(ApiObject):
    """One model version and the ready pods that serve it."""

    version: int = field("The model version.")
    pods: int = field("Ready pods serving it.")


@dataclass(frozen=True)
class Endpoints(ApiObject):
    """Addresses clients use to reach the model."""

    grpc: str | None = field("gRPC address through the load-balanced Service.", default=None)
    rest: str | None = field("REST URL of the model.", default=None)
    grpc_headless: str | None = field(
        "gRPC target for client-side round_robin balancing over the headless Service.", default=None
    )


@dataclass(frozen=True)
class DefaultsReference(ApiObject):
    """The cluster's InferenceServiceDefaults the children were rendered with."""

    name: str = field("Name of the InferenceServiceDefaults object.")
    generation: int = field("Its metadata.generation.", minimum=0)


@dataclass(frozen=True)
class InferenceServiceStatus(ApiObject):
    """The observed state of the InferenceService, written by tfleet."""

    observed_generation: int | None = field("The metadata.generation tfleet last acted on.", default=None)
    conditions: tuple[Condition, ...] = field(
        "Ready, ModelAvailable, Progressing, Degraded, Reconciling, Stalled and RolledOut (docs/conditions.md).",
        default=(),
        list_type="map",
        list_map_keys=("type",),
    )
    replicas: int | None = field("Serving pods that exist (all revisions).", default=None)
    ready_replicas: int | None = field("Serving pods that are ready.", default=None)
    ready: str | None = field("readyReplicas/replicas, for display.", default=None)
    reason: str | None = field(
        "One word for `kubectl get`: the Stalled reason when stalled (RolledBack, RolloutAborted, "
        "InvalidSpec, ProgressDeadlineExceeded, MetricCheckFailed), else the Reconciling reason while work goes on (RolloutInProgress, "
        "RolloutPaused, ReplicasNotReady), else the Ready reason (Available, ScaledToZero).",
        default=None,
    )
    model: str | None = field("The TF Serving model name the pods serve (spec.model.name, else metadata.name).",
                              default=None)
    selector: str | None = field("Label selector of the serving pods, for the scale subresource.", default=None)
    serving_version: int | None = field(
        "The model version all ready pods serve, when it is known.", default=None
    )
    serving_versions: tuple[ServedVersion, ...] = field(
        "While more than one pinned version is served (during a rollout): each version and how many "
        "ready pods serve it.", default=())
    rollout: RolloutStatus | None = field("Rollout progress.", default=None)
    endpoints: Endpoints | None = field("Client addresses.", default=None)
    defaults: DefaultsReference | None = field(
        "The cluster's InferenceServiceDefaults (name and generation) the children were rendered "
        "with; absent when there are none and the built-in defaults apply.", default=None
    )


def openapi_v3_schema() -> dict[str, Any]:
    spec = openapi_schema(InferenceServiceSpec)
    status = openapi_schema(InferenceServiceStatus)
    return {
        "type": "object",
        "description": "InferenceService runs a fleet of TensorFlow Serving pods for one model, "
        "with GPU scheduling, batching, model-aware health and gradual rollouts.",
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object: tfleet.dev/v1alpha1."},
            "kind": {"type": "string", "description": "Kind of this object: InferenceService."},
            "metadata": {"type": "object", "description": "Standard object metadata: name, namespace, labels."},
            "spec": spec,
            "status": status,
        },
        "required": ["spec"],
        # The name becomes the name of the Service and other children (parse_object checks the
        # same rule).
        "x-kubernetes-validations": [METADATA_NAME_RULE.to_openapi()],
    }


def build_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "tfleet", "app.kubernetes.io/part-of": "tfleet"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["tfis"],
                "categories": ["tfleet"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {"name": "Model", "type": "string", "jsonPath": ".status.model",
                         "description": "TF Serving model name"},
                        {"name": "Version", "type": "integer", "jsonPath": ".status.servingVersion",
                         "description": "Model version being served"},
                        {"name": "Target", "type": "integer", "jsonPath": ".spec.model.version",
                         "description": "Model version asked for"},
                        {"name": "Ready", "type": "string", "jsonPath": ".status.ready",
                         "description": "Ready pods / pods"},
                        {"name": "Status", "type": "string", "jsonPath": ".status.reason",
                         "description": "RolledBack, InvalidSpec, RolloutInProgress, Available, ..."},
                        {"name": "Rollout", "type": "string", "jsonPath": ".status.rollout.phase",
                         "description": "Rollout phase"},
                        {"name": "Weight", "type": "integer", "jsonPath": ".status.rollout.weight",
                         "description": "Canary weight", "priority": 1},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": openapi_v3_schema()},
                }
            ],
        },
    }


@dataclass(frozen=True)
class DefaultsCondition(ApiObject):
    """An observation of the InferenceServiceDefaults, in the Kubernetes condition convention."""

    type: str = field("Ready or Stalled.", max_length=316)
    status: str = field("True, False or Unknown.", enum=("True", "False", "Unknown"))
    reason: str = field("Accepted or InvalidDefaults.", max_length=1024)
    message: str = field("A human-readable explanation; for InvalidDefaults, every invalid field and its rule.",
                         max_length=32768)
    last_transition_time: str = field("When the status last changed (RFC 3339).")
    observed_generation: int | None = field(
        "The metadata.generation this condition was computed from.", default=None, minimum=0
    )


@dataclass(frozen=True)
class DefaultsStatus(ApiObject):
    """Whether tfleet accepted the defaults, and which generation InferenceServices are rendered with."""

    observed_generation: int | None = field("The metadata.generation tfleet last looked at.", default=None)
    conditions: tuple[DefaultsCondition, ...] = field(
        "Ready (True: this generation is in force; False with reason InvalidDefaults: it was refused, "
        "the message names each invalid field) and Stalled (True while refused).",
        default=(),
        list_type="map",
        list_map_keys=("type",),
    )
    applied_generation: int | None = field(
        "The generation InferenceServices are rendered with: this one when it is valid, else the last "
        "one accepted.", default=None
    )
    applied: Passthrough | None = field(
        "The spec of appliedGeneration, as accepted. While the spec is invalid, InferenceServices keep "
        "being rendered with it, also after an operator restart.", default=None
    )


def defaults_openapi_v3_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"{DEFAULTS_KIND} sets defaults for every InferenceService of the cluster: the TF "
        "Serving image and registry mirrors, GPU scheduling, resources, rollout steps, pod labels, "
        f"annotations, priority class and pull secrets, the health bridge image. tfleet reads the one "
        f"named {DEFAULTS_NAME}. An InferenceService's own fields win.",
        "properties": {
            "apiVersion": {"type": "string", "description": f"APIVersion of this object: {GROUP}/{VERSION}."},
            "kind": {"type": "string", "description": f"Kind of this object: {DEFAULTS_KIND}."},
            "metadata": {"type": "object", "description": f"Standard object metadata; the name must be {DEFAULTS_NAME}."},
            "spec": openapi_schema(InferenceServiceDefaultsSpec),
            "status": openapi_schema(DefaultsStatus),
        },
        "x-kubernetes-validations": [DEFAULTS_NAME_RULE.to_openapi()],
    }


def build_defaults_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{DEFAULTS_PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "tfleet", "app.kubernetes.io/part-of": "tfleet"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": DEFAULTS_KIND,
                "listKind": f"{DEFAULTS_KIND}List",
                "plural": DEFAULTS_PLURAL,
                "singular": DEFAULTS_KIND.lower(),
                "shortNames": ["tfdefaults"],
                "categories": ["tfleet"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status",
                         "description": "Whether this generation is in force"},
                        {"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason",
                         "description": "Accepted or InvalidDefaults"},
                        {"name": "Applied", "type": "integer", "jsonPath": ".status.appliedGeneration",
                         "description": "The generation InferenceServices are rendered with"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": defaults_openapi_v3_schema()},
                }
            ],
        },
    }


CRD_BUILDERS = {KIND: build_crd, DEFAULTS_KIND: build_defaults_crd}
CRD_SOURCES = {KIND: "operator/tfleet/api/model.py", DEFAULTS_KIND: "operator/tfleet/api/defaults.py"}


def crd_yaml(kind: str = KIND) -> str:
    return f"# Generated from {CRD_SOURCES[kind]} by `make manifests`; do not edit.\n" + yaml.safe_dump(
        CRD_BUILDERS[kind](), sort_keys=False, width=100
    )
