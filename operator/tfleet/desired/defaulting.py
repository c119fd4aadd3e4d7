"""The cluster's InferenceServiceDefaults applied to one InferenceService, as a pure function.

`with_defaults(isvc, defaults)` gives the InferenceService as the operator renders it: every
builder of `tfleet.desired.children` and the rollout engine then read one fully resolved spec,
so `tfleet render --defaults FILE` prints exactly what the operator applies.

Precedence, field by field (the InferenceService is "the object"):

- A scalar the object sets wins: image, gpu.resourceName, rollout.progressDeadlineSeconds,
  pod.priorityClassName. Unset, the defaults' value applies, else tfleet's built-in one.
- A list the object sets replaces the defaults' list, even when empty: gpu.tolerations,
  rollout.steps. A map that selects as a whole replaces too: gpu.nodeSelector.
- pod.labels and pod.annotations merge per key; the object's value wins for a key both set.
- pod.imagePullSecrets add up: the defaults' first, then the object's, each name once (the
  registry mirror's credentials must stay whatever the object lists).
- resources, per resource name: a resource the object names in its requests or its limits takes
  nothing from the defaults (neither request nor limit, so a request never ends up above a
  limit); every other resource takes the defaults' request and limit.
- The image: the object's spec.image, else the defaults' repository with tag (gpuTag, default
  tag-gpu, when gpu.count > 0). The registry mirrors then apply to it and to the health bridge
  image, whoever chose them: they say where images are pulled from, not which.
"""

from __future__ import annotations

import dataclasses

from tfleet.api.defaults import BUILT_IN, Defaults, mirrored
from tfleet.api.kubemeta import TOTAL_ANNOTATION_SIZE_LIMIT
from tfleet.api.model import InferenceService, Resources
from tfleet.api.schema import FieldError, ValidationError
from tfleet.desired import health_wiring

Quantities = dict[str, str | int]


def _resources(own: Resources, default: Resources) -> Resources:
    named = set(own.requests) | set(own.limits)
    requests = {k: v for k, v in default.requests.items() if k not in named}
    limits = {k: v for k, v in default.limits.items() if k not in named}
    return Resources(requests={**requests, **own.requests}, limits={**limits, **own.limits})


def _unique(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def with_defaults(isvc: InferenceService, defaults: Defaults = BUILT_IN) -> InferenceService:
    """`isvc` with the cluster's defaults applied (see the module's precedence rules). Raises
    ValidationError when only the combination is invalid (annotations too large together)."""
    spec, unset, d = isvc.spec, isvc.unset, defaults.spec
    gpu, rollout, pod = spec.gpu, spec.rollout, spec.pod
    if "gpu.resourceName" in unset and d.gpu.resource_name is not None:
        gpu = dataclasses.replace(gpu, resource_name=d.gpu.resource_name)
    if "gpu.nodeSelector" in unset and d.gpu.node_selector is not None:
        gpu = dataclasses.replace(gpu, node_selector=dict(d.gpu.node_selector))
    if "gpu.tolerations" in unset and d.gpu.tolerations is not None:
        gpu = dataclasses.replace(gpu, tolerations=d.gpu.tolerations)
    if "rollout.steps" in unset and d.rollout.steps is not None:
        rollout = dataclasses.replace(rollout, steps=d.rollout.steps)
    if "rollout.progressDeadlineSeconds" in unset and d.rollout.progress_deadline_seconds is not None:
        rollout = dataclasses.replace(rollout, progress_deadline_seconds=d.rollout.progress_deadline_seconds)
    pod = dataclasses.replace(
        pod,
        labels={**d.pod.labels, **pod.labels},
        annotations={**d.pod.annotations, **pod.annotations},
        image_pull_secrets=_unique((*d.pod.image_pull_secrets, *pod.image_pull_secrets)),
        priority_class_name=pod.priority_class_name if "pod.priorityClassName" not in unset
        else d.pod.priority_class_name,
    )
    image = spec.image if "image" not in unset and spec.image else d.image.image(gpu=spec.gpu.count > 0)
    resolved = dataclasses.replace(
        spec,
        image=mirrored(image, d.image.registry_mirrors),
        gpu=gpu,
        rollout=rollout,
        pod=pod,
        resources=_resources(spec.resources, d.resources),
    )
    if d.pod.annotations and spec.pod.annotations:
        total = sum(len(k.encode()) + len(v.encode()) for k, v in resolved.pod.annotations.items())
        if total > TOTAL_ANNOTATION_SIZE_LIMIT:
            raise ValidationError([FieldError(
                "spec.pod.annotations",
                f"together with the pod.annotations of {defaults.describe()}, the pods' annotations would "
                f"take {total} bytes, more than the {TOTAL_ANNOTATION_SIZE_LIMIT} the API server allows")])
    return dataclasses.replace(isvc, spec=resolved, unset=frozenset())


def bridge_image(defaults: Defaults = BUILT_IN) -> str:
    """The health bridge image of new revisions: the defaults' healthBridge.image, else the
    operator's own, through the registry mirrors."""
    image = defaults.spec.health_bridge.image or health_wiring.bridge_image()
    return mirrored(image, defaults.spec.image.registry_mirrors)
