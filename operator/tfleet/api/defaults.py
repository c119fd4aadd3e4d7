"""The InferenceServiceDefaults API (tfleet.dev/v1alpha1): the cluster's defaults for every
InferenceService, typed, validated, with their CRD generated from these dataclasses.

A platform team writes one cluster-scoped object, named `cluster`, and applies it like any
other manifest (kubectl, Argo CD, Flux). Every field is optional: a field left out here falls
back to tfleet's built-in default. How each field combines with an InferenceService's own
(the object wins; maps merge per key; lists replace) is `tfleet.desired.defaulting`.

As in `tfleet.api.model`, a rule the schema cannot express is published as CEL for the API
server and checked in a `check` method for `tfleet render` and the operator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tfleet.api.kubemeta import (
    LABEL_VALUE_MAX,
    MAX_MAP_ENTRIES,
    TOTAL_ANNOTATION_SIZE_LIMIT,
    annotation_problems,
    label_problems,
)
from tfleet.api.model import (
    DEFAULT_GPU_RESOURCE,
    DEFAULT_IMAGE,
    EXTENDED_RESOURCE_PATTERN,
    GPU_IMAGE_RULE,
    IMAGE_MAX_LENGTH,
    MAX_ROLLOUT_STEPS,
    MAX_TOLERATIONS,
    OBJECT_NAME_PATTERN,
    Resources,
    RolloutStep,
    Toleration,
    _annotation_map_rules,
    _is_gpu_image,
    _label_map_rules,
    _strictly_increasing,
)
from tfleet.api.schema import ApiObject, FieldError, Rule, ValidationError, field, go_regex, parse
from tfleet.api.vocabulary import API_VERSION, DEFAULTS_KIND, DEFAULTS_NAME

DEFAULT_REPOSITORY, _, DEFAULT_TAG = DEFAULT_IMAGE.rpartition(":")
GPU_TAG_SUFFIX = "-gpu"

# An image repository without tag or digest, as github.com/distribution/reference (regexp.go)
# reads one: an optional registry host (with a port) and lower-case path components.
_DOMAIN = r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY_PATTERN = rf"^({_DOMAIN}/)?{_PATH_COMPONENT}(/{_PATH_COMPONENT})*$"
# A tag (distribution/reference: [\w][\w.-]{0,127}).
TAG_PATTERN = r"^[\w][\w.-]{0,127}$"
# The same shapes for CEL, where a string literal holds no backslash escape: [.] for a dot.
_CEL_DOMAIN = "[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?([.][a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*([:][0-9]+)?"
_CEL_PATH_COMPONENT = "[a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*"
CEL_REGISTRY_HOST = f"^{_CEL_DOMAIN}$"
CEL_MIRROR = f"^{_CEL_DOMAIN}(/{_CEL_PATH_COMPONENT})*$"
_CEL_OBJECT_NAME = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
MAX_MIRRORS = 16
MIRROR_MAX_LENGTH = 255
REPOSITORY_MAX_LENGTH = 255
DOCKER_HUB = "docker.io"

REGISTRY_HOST_MESSAGE = (
    "every key of registryMirrors must be a registry host as image references name it: a DNS name "
    "with a dot or a port, or localhost (docker.io for Docker Hub), for example registry.example.com:5000"
)
MIRROR_MESSAGE = (
    "every value of registryMirrors must be a registry host with a dot or a port, or localhost, "
    "optionally followed by a path, for example mirror.example.com/dockerhub"
)
GPU_TAG_MESSAGE = (
    "gpuTag must make a GPU image with repository: a tag ending in -gpu (for example 2.19.0-gpu), "
    "or a repository whose name contains gpu"
)
DEFAULTS_NAME_MESSAGE = (
    f"metadata.name must be {DEFAULTS_NAME}: tfleet reads the one {DEFAULTS_KIND} named {DEFAULTS_NAME}"
)
DEFAULTS_NAME_RULE = Rule(rule=f"self.metadata.name == '{DEFAULTS_NAME}'", message=DEFAULTS_NAME_MESSAGE)


def _is_registry_host(text: str) -> bool:
    """A host that an image reference's first component is read as (distribution/reference
    normalize.go, splitDockerDomain): one with a dot or a port, or localhost."""
    return bool(go_regex(CEL_REGISTRY_HOST).match(text)) and ("." in text or ":" in text or text == "localhost")


def _cel_registry_host(expr: str) -> str:
    return (f"{expr}.matches('{CEL_REGISTRY_HOST}') && "
            f"({expr}.contains('.') || {expr}.contains(':') || {expr} == 'localhost')")


def _cel_mirror(expr: str) -> str:
    return (f"{expr}.matches('{CEL_MIRROR}') && "
            f"({expr}.matches('^[^/]*[.:]') || {expr} == 'localhost' || {expr}.startsWith('localhost/'))")


def _is_mirror(text: str) -> bool:
    host = text.split("/", 1)[0]
    return bool(go_regex(CEL_MIRROR).match(text)) and ("." in host or ":" in host or host == "localhost")


# The GPU image rule of InferenceService spec.image, applied to repository:gpuTag.
_GPU_IMAGE_EXPR = f"((has(self.repository) ? self.repository : '{DEFAULT_REPOSITORY}') + ':' + self.gpuTag)"


@dataclass(frozen=True)
class ImageDefaults(ApiObject):
    """The TF Serving image of InferenceServices that set no spec.image, and where images are pulled from."""

    __rules__ = (
        Rule(
            rule="!has(self.gpuTag) || " + "(" + GPU_IMAGE_RULE.replace("self.image", _GPU_IMAGE_EXPR) + ")",
            message=GPU_TAG_MESSAGE,
            field_path=".gpuTag",
        ),
    )

    repository: str | None = field(
        f"Image repository, for example registry.example.com/ml/tensorflow-serving. Default {DEFAULT_REPOSITORY}.",
        default=None, pattern=REPOSITORY_PATTERN, max_length=REPOSITORY_MAX_LENGTH,
    )
    tag: str | None = field(
        f"Tag of InferenceServices without GPUs. Default {DEFAULT_TAG}.", default=None, pattern=TAG_PATTERN,
    )
    gpu_tag: str | None = field(
        f"Tag of InferenceServices with gpu.count > 0 (the GPU variant). Default: tag + {GPU_TAG_SUFFIX}.",
        default=None, pattern=TAG_PATTERN,
    )
    registry_mirrors: dict[str, str] = field(
        "Registries to pull from instead of others: a registry host (docker.io for Docker Hub, "
        "ghcr.io, registry.example.com:5000) to the host and optional path of its mirror. Every "
        "image of the serving pods (TF Serving, whether defaulted or set by the InferenceService, "
        "and the health bridge) from a registry named here is pulled from its mirror: with "
        "docker.io: mirror.example.com/hub, tensorflow/serving:2.19.0 becomes "
        "mirror.example.com/hub/tensorflow/serving:2.19.0.",
        default_factory=dict, max_properties=MAX_MIRRORS, value_max_length=MIRROR_MAX_LENGTH,
        rules=(
            Rule(rule=f"self.all(k, {_cel_registry_host('k')})", message=REGISTRY_HOST_MESSAGE),
            Rule(rule=f"self.all(k, {_cel_mirror('self[k]')})", message=MIRROR_MESSAGE),
        ),
    )

    def check(self, path: str) -> list[FieldError]:
        errors = []
        if self.gpu_tag is not None and not _is_gpu_image(f"{self.repository or DEFAULT_REPOSITORY}:{self.gpu_tag}"):
            errors.append(FieldError(f"{path}.gpuTag", f'"{self.gpu_tag}" is not a GPU tag: use a tag ending in '
                                     f"-gpu (for example {DEFAULT_TAG}-gpu), or a repository whose name contains gpu"))
        for host, mirror in self.registry_mirrors.items():
            if not _is_registry_host(host):
                errors.append(FieldError(f"{path}.registryMirrors", f'"{host}" is not a registry host: use a DNS '
                                         "name with a dot or a port, or localhost (docker.io for Docker Hub)"))
            elif not _is_mirror(mirror):
                errors.append(FieldError(f"{path}.registryMirrors.{host}", f'"{mirror}" is not a registry host '
                                         "with an optional path, for example mirror.example.com/dockerhub"))
        return errors

    def image(self, gpu: bool) -> str:
        """The TF Serving image these defaults give an InferenceService without spec.image."""
        tag = self.tag or DEFAULT_TAG
        if gpu:
            tag = self.gpu_tag or tag + GPU_TAG_SUFFIX
        return f"{self.repository or DEFAULT_REPOSITORY}:{tag}"


@dataclass(frozen=True)
class GpuDefaults(ApiObject):
    """GPU scheduling of InferenceServices with gpu.count > 0 that leave these out."""

    resource_name: str | None = field(
        f"Extended resource name of the GPU, for example amd.com/gpu. Default {DEFAULT_GPU_RESOURCE}.",
        default=None, min_length=1, pattern=EXTENDED_RESOURCE_PATTERN,
    )
    node_selector: dict[str, str] | None = field(
        "Node labels GPU pods require. Default nvidia.com/gpu.present=true; {} selects no nodes. An "
        "InferenceService's own gpu.nodeSelector replaces this map.",
        default=None, max_properties=MAX_MAP_ENTRIES, value_max_length=LABEL_VALUE_MAX,
        rules=_label_map_rules("nodeSelector"),
    )
    tolerations: tuple[Toleration, ...] | None = field(
        "Extra tolerations of GPU pods. An InferenceService's own gpu.tolerations replace this list. "
        "A toleration for the <resourceName> NoSchedule taint is always added.",
        default=None, max_items=MAX_TOLERATIONS,
    )

    def check(self, path: str) -> list[FieldError]:
        return [FieldError(p, m) for p, m in label_problems(self.node_selector or {}, f"{path}.nodeSelector")]


@dataclass(frozen=True)
class RolloutDefaults(ApiObject):
    """Canary rollouts of InferenceServices that leave these out."""

    __rules__ = (
        Rule(
            rule="!has(self.steps) || " + _strictly_increasing("self.steps", MAX_ROLLOUT_STEPS, ".weight"),
            message="rollout step weights must be strictly increasing",
            field_path=".steps",
        ),
    )

    steps: tuple[RolloutStep, ...] | None = field(
        "Canary steps, in order; weights strictly increasing within 1..100. An InferenceService's own "
        "rollout.steps replace this list. Default [{weight: 10, pause: 60s}, {weight: 50, pause: 120s}].",
        default=None, max_items=MAX_ROLLOUT_STEPS,
    )
    progress_deadline_seconds: int | None = field(
        "How long a step may wait for healthy canary pods before the rollout fails. Default 600.",
        default=None, minimum=1,
    )

    def check(self, path: str) -> list[FieldError]:
        weights = [s.weight for s in self.steps or ()]
        for i in range(1, len(weights)):
            if weights[i] <= weights[i - 1]:
                return [FieldError(f"{path}.steps[{i}].weight",
                                   f"step weights must be strictly increasing, but {weights[i]} follows {weights[i - 1]}")]
        return []


@dataclass(frozen=True)
class PodDefaults(ApiObject):
    """Settings of every serving pod."""

    labels: dict[str, str] = field(
        "Labels of every serving pod, merged with the InferenceService's pod.labels (its value wins "
        "for a key both set). tfleet's own labels take precedence.",
        default_factory=dict, max_properties=MAX_MAP_ENTRIES, value_max_length=LABEL_VALUE_MAX,
        rules=_label_map_rules("labels"),
    )
    annotations: dict[str, str] = field(
        "Annotations of every serving pod, merged with the InferenceService's pod.annotations (its "
        "value wins for a key both set).",
        default_factory=dict, max_properties=MAX_MAP_ENTRIES, value_max_length=TOTAL_ANNOTATION_SIZE_LIMIT,
        rules=_annotation_map_rules("annotations"),
    )
    priority_class_name: str | None = field(
        "PriorityClass of serving pods whose InferenceService sets no pod.priorityClassName.",
        default=None, pattern=OBJECT_NAME_PATTERN, max_length=253,
    )
    image_pull_secrets: tuple[str, ...] = field(
        "Names of Secrets used to pull the images, in the InferenceService's namespace (each must "
        "exist there); they come before the InferenceService's own pod.imagePullSecrets.",
        default=(), max_items=16, item_max_length=253,
        rules=(Rule(rule=f"self.all(s, s.matches('{_CEL_OBJECT_NAME}'))",
                    message="every item of imagePullSecrets must be a Secret name (a lowercase RFC 1123 subdomain)"),),
    )

    def check(self, path: str) -> list[FieldError]:
        problems = [*label_problems(self.labels, f"{path}.labels"),
                    *annotation_problems(self.annotations, f"{path}.annotations")]
        errors = [FieldError(p, m) for p, m in problems]
        for i, name in enumerate(self.image_pull_secrets):
            if not go_regex(OBJECT_NAME_PATTERN).match(name):
                errors.append(FieldError(f"{path}.imagePullSecrets[{i}]",
                                         f'"{name}" is not a Secret name (a lowercase RFC 1123 subdomain)'))
        return errors


@dataclass(frozen=True)
class HealthBridgeDefaults(ApiObject):
    """The health bridge sidecar of every serving pod."""

    image: str | None = field(
        "Image of the health bridge (tfleet's own image). Default: the operator's image "
        "(TFLEET_BRIDGE_IMAGE). Like the operator's own image, it is not part of a revision: "
        "revisions made afterwards get it, running ones keep theirs.",
        default=None, min_length=1, max_length=IMAGE_MAX_LENGTH,
    )


@dataclass(frozen=True)
class InferenceServiceDefaultsSpec(ApiObject):
    """Defaults for every InferenceService of the cluster. A field an InferenceService sets
    itself wins; maps merge per key; lists replace, except imagePullSecrets, which add up."""

    # No field publishes a default: the API server would store {} for each, which says nothing.

    image: ImageDefaults = field("The TF Serving image and registry mirrors.", default_factory=ImageDefaults,
                          publish_default=False)
    gpu: GpuDefaults = field("GPU scheduling.", default_factory=GpuDefaults,
                          publish_default=False)
    resources: Resources = field(
        "Resources of the TF Serving container. For each resource (cpu, memory, ...) an "
        "InferenceService names in its own requests or limits, it takes neither request nor limit "
        "from here; for the others it takes both.",
        default_factory=Resources, publish_default=False,
    )
    rollout: RolloutDefaults = field("Canary rollout steps and deadline.", default_factory=RolloutDefaults,
                          publish_default=False)
    pod: PodDefaults = field("Settings of every serving pod.", default_factory=PodDefaults,
                          publish_default=False)
    health_bridge: HealthBridgeDefaults = field("The health bridge sidecar.", default_factory=HealthBridgeDefaults,
                          publish_default=False)


@dataclass(frozen=True)
class Defaults:
    """The defaults InferenceServices are rendered with, and where they come from: the
    InferenceServiceDefaults object's name and metadata.generation, or None for tfleet's
    built-in defaults."""

    spec: InferenceServiceDefaultsSpec = InferenceServiceDefaultsSpec()
    name: str | None = None
    generation: int | None = None

    def describe(self) -> str:
        if self.name is None:
            return "the built-in defaults"
        return f"{DEFAULTS_KIND} {self.name} generation {self.generation}"


BUILT_IN = Defaults()


def parse_defaults_spec(spec: Any, path: str = "spec") -> InferenceServiceDefaultsSpec:
    """Parse and validate a defaults spec; ValidationError names each field."""
    return parse(InferenceServiceDefaultsSpec, {} if spec is None else spec, path)


def parse_defaults_object(obj: dict[str, Any]) -> Defaults:
    """A whole InferenceServiceDefaults (from the API or a file) as the defaults it sets."""
    errors: list[FieldError] = []
    if obj.get("apiVersion") != API_VERSION:
        errors.append(FieldError("apiVersion", f'must be "{API_VERSION}", got {obj.get("apiVersion")!r}'))
    if obj.get("kind") != DEFAULTS_KIND:
        errors.append(FieldError("kind", f'must be "{DEFAULTS_KIND}", got {obj.get("kind")!r}'))
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    if meta.get("name") != DEFAULTS_NAME:
        errors.append(FieldError("metadata.name", f'must be "{DEFAULTS_NAME}", got {meta.get("name")!r}: tfleet '
                                 f"reads the one {DEFAULTS_KIND} named {DEFAULTS_NAME}"))
    try:
        spec = parse_defaults_spec(obj.get("spec"))
    except ValidationError as exc:
        errors.extend(exc.errors)
    if errors:
        raise ValidationError(errors)
    return Defaults(spec=spec, name=DEFAULTS_NAME, generation=int(meta.get("generation") or 0))


# --------------------------------------------------------------------------- image references


def split_registry(image: str) -> tuple[str, str]:
    """(registry host, the rest) of an image reference, as container runtimes read it
    (github.com/distribution/reference normalize.go, splitDockerDomain): the first component is
    the registry when it has a dot or a port or is localhost (or is not lower case); otherwise
    the image is on Docker Hub, docker.io, where a one-component name is under library/."""
    first, slash, rest = image.partition("/")
    if not slash or (not re.search(r"[.:]", first) and first != "localhost" and first.lower() == first):
        host, rest = DOCKER_HUB, image
    else:
        host = DOCKER_HUB if first == "index.docker.io" else first
    if host == DOCKER_HUB and "/" not in rest:
        rest = "library/" + rest
    return host, rest


def mirrored(image: str, mirrors: dict[str, str]) -> str:
    """`image` pulled through the mirror of its registry, if `mirrors` names one."""
    if not mirrors:
        return image
    host, rest = split_registry(image)
    mirror = mirrors.get(host)
    return f"{mirror.rstrip('/')}/{rest}" if mirror else image
