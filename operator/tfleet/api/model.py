"""The InferenceService API (tfleet.dev/v1alpha1): typed, frozen, defaulted, validated.

These dataclasses are the single source of truth for the API. `tfleet.api.crd` generates the
CRD from them, and `parse_spec` turns a manifest's `spec` into them. Rules the schema can
express live in field declarations; cross-field and semantic rules are both published as CEL (for the API
server, which refuses a bad object at `kubectl apply`) and checked in `check` methods (for
offline rendering and the operator); a test holds each pair to the same verdicts. Only the
shape of pod.affinity is checked here alone: the CRD keeps it schemaless, and CEL cannot see
fields a schema does not declare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tfleet.api.kubemeta import (
    CEL_LABEL_VALUE,
    LABEL_VALUE_MAX,
    MAX_MAP_ENTRIES,
    TOTAL_ANNOTATION_SIZE_LIMIT,
    annotation_problems,
    cel_annotation_key_rule,
    cel_label_key_rule,
    label_problems,
)
from tfleet.api.schema import (
    ApiObject,
    Duration,
    FieldError,
    IntOrString,
    Passthrough,
    Quantity,
    Rule,
    ValidationError,
    field,
    go_regex,
    parse,
)

DEFAULT_IMAGE = "tensorflow/serving:2.19.0"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
MAX_BATCH_SIZES = 16
MAX_ROLLOUT_STEPS = 10
# Names TF Serving uses in URLs (/v1/models/<name>) and in its config file.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Service names are DNS-1035 labels (they start with a letter); the InferenceService's name
# becomes a Service name.
SERVICE_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# Names of most objects (Secrets, PVCs, ServiceAccounts) are DNS-1123 subdomains.
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Extended resources are always domain-prefixed (nvidia.com/gpu, amd.com/gpu).
EXTENDED_RESOURCE_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
STORAGE_SCHEMES = ("gs://", "s3://", "hdfs://", "pvc://", "/")
# Object stores whose paths start with a bucket: gs://<bucket>/<path>.
BUCKET_SCHEMES = ("gs://", "s3://")
# The InferenceService's name becomes the name of its Service and, with suffixes such as
# -grpc and -config, of its other children.
NAME_MAX_LENGTH = 52
# Bounds that keep the cost the API server estimates for the CEL rules within its budget: a
# rule over a list runs once per item, and a string rule costs in proportion to the length.
MAX_TOLERATIONS = 64
MAX_EXTRA_ARGS = 64
IMAGE_MAX_LENGTH = 1024
# tensorflow_model_server flags tfleet sets itself.
MANAGED_FLAGS = ("--port", "--rest_api_port", "--model_config_file", "--model_config_file_poll_wait_seconds",
                 "--model_name", "--model_base_path", "--enable_batching", "--batching_parameters_file",
                 "--monitoring_config_file", "--grpc_channel_arguments")
# Ports of the health bridge sidecar that shares the pod's network namespace.
HEALTH_BRIDGE_GRPC_PORT = 8510
HEALTH_BRIDGE_HTTP_PORT = 8511
RESERVED_PORTS = {"health bridge gRPC port": HEALTH_BRIDGE_GRPC_PORT, "health bridge HTTP port": HEALTH_BRIDGE_HTTP_PORT}


def _cel_list(values: tuple[str, ...] | tuple[int, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" if isinstance(v, str) else str(v) for v in values) + "]"


# An image is a GPU image when its tag is "gpu", ends in "-gpu" or holds "-gpu-", or when the
# last part of its repository name contains "gpu" (see `_is_gpu_image`). The tag follows the
# last ":" after the last "/" (a registry may carry a port); a digest follows the first "@".
GPU_IMAGE_RULE = (
    "self.image.matches('^([^@]*/)?[^/:@]*gpu[^/:@]*(:[^/@]*)?(@.*)?$') || "
    "self.image.matches('^[^@]*:(gpu|[^/:@]*-gpu(-[^/:@]*)?)(@.*)?$')"
)
GPU_IMAGE_MESSAGE = (
    "image is not a GPU image, but gpu.count is more than 0: use a tag ending in -gpu "
    "(for example tensorflow/serving:2.19.0-gpu)"
)
BUILTIN_NEEDS_MONITORING = (
    "builtin analysis reads TF Serving's own metrics: server.monitoring must be true"
)
METADATA_NAME_MESSAGE = (
    f"metadata.name must be a DNS label of at most {NAME_MAX_LENGTH} characters (a-z, 0-9, -) "
    "that starts with a letter"
)
# At the root of a custom resource CEL sees metadata.name (and generateName); a rule there is
# how a CRD constrains its objects' names.
METADATA_NAME_RULE = Rule(
    rule=f"self.metadata.name.size() <= {NAME_MAX_LENGTH} && "
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
    message=METADATA_NAME_MESSAGE,
)


def _label_map_rules(field_name: str) -> tuple[Rule, ...]:
    """CEL for the API server's label rules on a map copied into children's labels or node
    selectors (`label_problems`)."""
    return (
        Rule(
            rule=f"self.all(k, {cel_label_key_rule('k')})",
            message=f"every key of {field_name} must be a valid label key: an optional DNS subdomain prefix "
            "and /, then a name of at most 63 characters (ASCII letters, digits, '-', '_' or '.') "
            "that starts and ends with a letter or digit",
        ),
        Rule(
            rule=f"self.all(k, self[k].matches('{CEL_LABEL_VALUE}'))",
            message=f"every value of {field_name} must be a valid label value: empty or consist of ASCII "
            "letters, digits, '-', '_' or '.', and start and end with a letter or digit",
        ),
    )


def _annotation_map_rules(field_name: str) -> tuple[Rule, ...]:
    """CEL for the API server's annotation rules on a map copied into children's annotations
    (`annotation_problems`); sizes count bytes, as the API server does."""
    return (
        Rule(
            rule=f"self.all(k, {cel_annotation_key_rule('k')})",
            message=f"every key of {field_name} must be a valid annotation key: an optional DNS subdomain "
            "prefix and /, then a name of at most 63 characters (ASCII letters, digits, '-', '_' or "
            "'.') that starts and ends with a letter or digit, in any case",
        ),
        Rule(
            rule=f"self.map(k, bytes(k).size() + bytes(self[k]).size()).sum() <= {TOTAL_ANNOTATION_SIZE_LIMIT}",
            message=f"{field_name} may not be larger than {TOTAL_ANNOTATION_SIZE_LIMIT} bytes (keys and "
            "values together)",
        ),
    )


def _strictly_increasing(list_expr: str, max_items: int, key: str = "") -> str:
    """CEL for "each element is greater than the one before it".

    Standard CEL has no indexed iteration, so the indices are spelled out up to the list's
    maxItems. This compiles on every CEL implementation and keeps the API server's cost
    estimate bounded.
    """
    indices = ", ".join(str(i) for i in range(1, max_items))
    return f"[{indices}].all(i, i >= size({list_expr}) || {list_expr}[i - 1]{key} < {list_expr}[i]{key})"


# ConfigMap keys (k8s.io/apimachinery/pkg/util/validation IsConfigMapKey).
CONFIG_MAP_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
MAX_INLINE_GOLDEN_BYTES = 64 * 1024


@dataclass(frozen=True)
class ConfigMapKeyRef(ApiObject):
    """One key of a ConfigMap in the InferenceService's namespace."""

    name: str = field("Name of the ConfigMap.", pattern=OBJECT_NAME_PATTERN, max_length=253)
    key: str = field("The key that holds the golden requests.", default="requests.json",
                     pattern=CONFIG_MAP_KEY_PATTERN, max_length=253)


@dataclass(frozen=True)
class GoldenRequests(ApiObject):
    """Where the golden requests are: a ConfigMap key, or inline. Either holds a JSON array of
    TF Serving REST :predict request bodies ({"signature_name": ..., "instances": [...]} or
    {"inputs": ...}), each optionally with the "predictions" (for instances) or "outputs" (for
    inputs) it must return."""

    __rules__ = (
        Rule(
            rule="has(self.configMapRef) != has(self.inline)",
            message="requests needs exactly one of configMapRef and inline",
        ),
    )

    config_map_ref: ConfigMapKeyRef | None = field(
        "A ConfigMap key holding the requests. It is mounted into the health bridge and read when each pod "
        "starts: editing the ConfigMap changes what new pods run, and rolls nothing; name another ConfigMap "
        "(or key) to roll the change out as a new revision. A ConfigMap that does not exist keeps new pods "
        "from starting.",
        default=None,
    )
    inline: str | None = field(
        "The requests themselves, as JSON text (the same document a ConfigMap key would hold). They become "
        "part of the revision: a change rolls out like a new model version.",
        default=None,
        min_length=1,
        max_length=MAX_INLINE_GOLDEN_BYTES,
    )

    def check(self, path: str) -> list[FieldError]:
        if (self.config_map_ref is None) == (self.inline is None):
            return [FieldError(path, "give exactly one of configMapRef and inline")]
        if self.inline is not None:
            # JSON is beyond CEL: only the operator and `tfleet render` read the text.
            from tfleet.health.golden import GoldenError, parse_requests

            try:
                parse_requests(self.inline)
            except GoldenError as exc:
                return [FieldError(f"{path}.inline", str(exc))]
        return []


@dataclass(frozen=True)
class Preflight(ApiObject):
    """Golden requests every pod must answer before it takes traffic. The health bridge sends them to the
    pod's own TF Serving once the model version is AVAILABLE; the pod turns Ready only when every request
    succeeds and, where a request gives the outputs it must return, the answer matches within the
    tolerance. The same requests warm the version up, so its first real request does not pay for
    TensorFlow's lazy initialisation. A canary whose pods fail the pre-flight is rolled back at once, with
    the request, what came back and what was expected."""

    requests: GoldenRequests = field("The golden requests.")
    tolerance: float = field(
        "How far an expected number may be off: a value matches when |got - want| <= tolerance * "
        "max(1, |want|), absolute up to 1 and relative above. Strings and booleans must be equal.",
        default=1e-5,
        minimum=0,
    )
    timeout_seconds: int = field(
        "Deadline of the whole pre-flight run in a pod; a run that takes longer fails. A failed run is "
        "tried again after 10 s, doubling up to 5 minutes, while the pod stays unready.",
        default=30,
        minimum=1,
        maximum=3600,
    )



@dataclass(frozen=True)
class ModelSpec(ApiObject):
    """The model TF Serving loads: where it is stored and which version to serve."""

    __rules__ = (
        Rule(
            rule="(has(self.name) ? self.name : '') == (has(oldSelf.name) ? oldSelf.name : '')",
            message="model.name is immutable",
            field_path=".name",
        ),
        # The path reaches TF Serving's config file and, for pvc://, a mount: a ".." segment
        # would leave the claim's directory, a newline would add a line to the config.
        Rule(
            rule="!self.basePath.matches('(^|/)[.][.](/|$)')",
            message='basePath must not contain a ".." path segment',
            field_path=".basePath",
        ),
        Rule(
            rule="!self.basePath.matches('[\\x00-\\x1f\\x7f]')",
            message="basePath must not contain control characters",
            field_path=".basePath",
        ),
        Rule(
            rule="self.basePath.matches('^(gs://|s3://|hdfs://|pvc://|/)')",
            message="unsupported storage in basePath: use gs://, s3://, hdfs://, pvc://<claim>/<path> "
            "or an absolute path",
            field_path=".basePath",
        ),
        Rule(
            rule="!self.basePath.matches('^(gs|s3)://(/|$)')",
            message="basePath must name a bucket: gs://<bucket>/<path> or s3://<bucket>/<path>",
            field_path=".basePath",
        ),
        Rule(
            rule="!self.basePath.startsWith('pvc://') || "
            "(self.basePath.matches('^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/.') "
            "&& self.basePath.matches('^pvc://[^/]{1,253}/'))",
            message="basePath must have the form pvc://<claim>/<path> with a valid claim name",
            field_path=".basePath",
        ),
    )

    base_path: str = field(
        "Where the model's numbered version directories live: gs://bucket/path, s3://bucket/path, "
        "hdfs://host/path, pvc://<claim>/<path> (a PersistentVolumeClaim in the same namespace, "
        "mounted read-only), or an absolute path inside the image.",
        min_length=1,
        # Bounds the cost the API server estimates for the basePath CEL rules.
        max_length=4096,
    )
    name: str | None = field(
        "TF Serving model name, used in gRPC ModelSpec.name and REST /v1/models/<name>. "
        "Defaults to metadata.name. Immutable.",
        default=None,
        pattern=MODEL_NAME_PATTERN,
    )
    version: int | None = field(
        "The model version to serve. Changing it rolls out a new revision gradually. "
        "Omitted: TF Serving serves the latest version it finds under basePath.",
        default=None,
        minimum=1,
    )
    credentials_secret: str | None = field(
        "Name of a Secret in the same namespace with storage credentials. Its keys become "
        "environment variables of TF Serving (for example AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_REGION, S3_ENDPOINT) and it is mounted read-only at "
        "/var/run/secrets/tfleet/storage; a key named gcs.json is used as "
        "GOOGLE_APPLICATION_CREDENTIALS.",
        default=None,
        max_length=253,
        pattern=OBJECT_NAME_PATTERN,
    )
    preflight: Preflight | None = field(
        "Golden requests each pod must pass (and is warmed up with) before it takes traffic. Part of the "
        "revision: adding or changing it rolls out.",
        default=None,
    )

    def check(self, path: str) -> list[FieldError]:
        if re.search(r"(^|/)\.\.(/|$)", self.base_path):
            return [FieldError(f"{path}.basePath", 'must not contain a ".." path segment')]
        if re.search(r"[\x00-\x1f\x7f]", self.base_path):
            return [FieldError(f"{path}.basePath", "must not contain control characters (newline, tab, NUL)")]
        if not self.base_path.startswith(STORAGE_SCHEMES):
            scheme = self.base_path.split("://", 1)[0] + "://" if "://" in self.base_path else self.base_path
            return [
                FieldError(
                    f"{path}.basePath",
                    f'unsupported storage "{scheme}": use gs://, s3://, hdfs://, pvc://<claim>/<path> '
                    "or an absolute path",
                )
            ]
        for scheme in BUCKET_SCHEMES:
            if self.base_path.startswith(scheme) and self.base_path[len(scheme) :].partition("/")[0] == "":
                return [
                    FieldError(f"{path}.basePath", f'"{self.base_path}" must name a bucket: {scheme}<bucket>/<path>')
                ]
        if self.base_path.startswith("pvc://"):
            claim, _, rest = self.base_path[len("pvc://") :].partition("/")
            if not go_regex(OBJECT_NAME_PATTERN).match(claim) or len(claim) > 253 or not rest:
                return [
                    FieldError(
                        f"{path}.basePath",
                        f'"{self.base_path}" must have the form pvc://<claim>/<path> with a valid claim name',
                    )
                ]
        return []


@dataclass(frozen=True)
class Autoscaling(ApiObject):
    """Horizontal autoscaling on CPU utilisation. The HorizontalPodAutoscaler targets the
    InferenceService's scale subresource, so that autoscaling and rollouts share one replica
    count."""

    __rules__ = (
        Rule(
            rule="self.minReplicas <= self.maxReplicas",
            message="minReplicas must be less than or equal to maxReplicas",
            field_path=".minReplicas",
        ),
    )

    max_replicas: int = field("Upper bound of the replica count.", minimum=1)
    min_replicas: int = field("Lower bound of the replica count.", default=1, minimum=1)
    target_cpu_utilization_percentage: int = field(
        "Average CPU utilisation, as a percentage of the CPU request, that the autoscaler keeps "
        "the pods at. Set resources.requests.cpu for it to work.",
        default=80,
        minimum=1,
        maximum=100,
        name="targetCPUUtilizationPercentage",
    )

    def check(self, path: str) -> list[FieldError]:
        if self.min_replicas > self.max_replicas:
            return [
                FieldError(
                    f"{path}.minReplicas",
                    f"minReplicas ({self.min_replicas}) must be less than or equal to maxReplicas ({self.max_replicas})",
                )
            ]
        return []


@dataclass(frozen=True)
class Resources(ApiObject):
    """Compute resources of the TF Serving container, as in a Pod's container resources."""

    requests: dict[str, Quantity] = field(
        "Minimum resources, for example {cpu: \"2\", memory: 4Gi}.", default_factory=dict
    )
    limits: dict[str, Quantity] = field(
        "Maximum resources, for example {memory: 8Gi}. GPUs are set with gpu.count, not here.",
        default_factory=dict,
    )


@dataclass(frozen=True)
class Toleration(ApiObject):
    """A Kubernetes toleration, as in a Pod spec."""

    # The API server's own toleration rules (ValidateTolerations), so that a bad toleration is
    # refused with the InferenceService rather than when the operator writes the Deployment.
    __rules__ = (
        Rule(
            rule="!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
            message="value must be empty when operator is Exists",
            field_path=".value",
        ),
        Rule(
            rule="(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
            message="operator must be Exists when key is empty",
            field_path=".operator",
        ),
        Rule(
            rule="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            message="tolerationSeconds may only be set with effect NoExecute",
            field_path=".tolerationSeconds",
        ),
    )

    key: str | None = field("The taint key the toleration applies to.", default=None)
    operator: str | None = field(
        "Exists or Equal (the default).", default=None, enum=("Exists", "Equal")
    )
    value: str | None = field("The taint value, with operator Equal.", default=None)
    effect: str | None = field(
        "NoSchedule, PreferNoSchedule or NoExecute; empty matches all effects.",
        default=None,
        enum=("NoSchedule", "PreferNoSchedule", "NoExecute"),
    )
    toleration_seconds: int | None = field(
        "How long a NoExecute taint is tolerated; unset means forever.", default=None
    )

    def check(self, path: str) -> list[FieldError]:
        # The CEL rules above, for `tfleet render` and the operator.
        errors = []
        if self.operator == "Exists" and self.value:
            errors.append(FieldError(f"{path}.value", "must be empty when operator is Exists"))
        if not self.key and self.operator != "Exists":
            errors.append(FieldError(f"{path}.operator", "must be Exists when key is empty"))
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            errors.append(FieldError(f"{path}.tolerationSeconds", "may only be set with effect NoExecute"))
        return errors


@dataclass(frozen=True)
class Gpu(ApiObject):
    """GPU scheduling. With count > 0 the pods request GPUs, run the -gpu image variant, select
    GPU nodes and tolerate the GPU taint."""

    count: int = field("GPUs per pod (the container's limit).", default=0, minimum=0, maximum=16)
    # The defaults of resourceName, nodeSelector and tolerations are not published in the CRD:
    # the API server would store them in every object, and an unset field must stay unset for
    # the cluster's InferenceServiceDefaults to fill it (see DEFAULTABLE_FIELDS).
    resource_name: str = field(
        f"Extended resource name of the GPU. Default: the cluster's InferenceServiceDefaults "
        f"gpu.resourceName, else {DEFAULT_GPU_RESOURCE}.", default=DEFAULT_GPU_RESOURCE, min_length=1,
        pattern=EXTENDED_RESOURCE_PATTERN, publish_default=False,
    )
    node_selector: dict[str, str] = field(
        "Node labels GPU pods require, merged with pod.nodeSelector. Default: the cluster's "
        "InferenceServiceDefaults gpu.nodeSelector, else nvidia.com/gpu.present=true (set by NVIDIA "
        "GPU feature discovery); a map given here (even {}) replaces the default.",
        default_factory=lambda: dict(DEFAULT_GPU_NODE_SELECTOR),
        max_properties=MAX_MAP_ENTRIES,
        value_max_length=LABEL_VALUE_MAX,
        rules=_label_map_rules("nodeSelector"),
        publish_default=False,
    )
    tolerations: tuple[Toleration, ...] = field(
        "Extra tolerations for GPU nodes. Default: the cluster's InferenceServiceDefaults "
        "gpu.tolerations; a list given here (even []) replaces them. A toleration for the "
        "<resourceName> NoSchedule taint is always added.",
        default=(),
        max_items=MAX_TOLERATIONS,
    )

    def check(self, path: str) -> list[FieldError]:
        return [FieldError(p, m) for p, m in label_problems(self.node_selector, f"{path}.nodeSelector")]


@dataclass(frozen=True)
class Batching(ApiObject):
    """TF Serving server-side batching (BatchingParameters). TF Serving cannot reload these, so a
    change rolls the pods."""

    __rules__ = (
        Rule(
            rule="!has(self.allowedBatchSizes) || size(self.allowedBatchSizes) == 0 || "
            "self.allowedBatchSizes[size(self.allowedBatchSizes) - 1] == self.maxBatchSize",
            message="the last allowed batch size must equal maxBatchSize",
            field_path=".allowedBatchSizes",
        ),
        Rule(
            rule="!has(self.allowedBatchSizes) || "
            + _strictly_increasing("self.allowedBatchSizes", MAX_BATCH_SIZES),
            message="allowedBatchSizes must be strictly increasing",
            field_path=".allowedBatchSizes",
        ),
        Rule(
            rule="!has(self.allowedBatchSizes) || self.allowedBatchSizes.all(s, s >= 1)",
            message="allowed batch sizes must be at least 1",
            field_path=".allowedBatchSizes",
        ),
    )

    max_batch_size: int = field("The largest batch TF Serving forms.", minimum=1)
    batch_timeout_micros: int = field(
        "How long, in microseconds, a partial batch waits for more requests.", default=1000, minimum=0
    )
    num_batch_threads: int = field(
        "Threads that process batches in parallel; usually the number of CPU cores or GPUs.",
        default=4,
        minimum=1,
    )
    max_enqueued_batches: int = field(
        "Batches that may wait in the queue before requests are rejected.", default=100, minimum=1
    )
    allowed_batch_sizes: tuple[int, ...] = field(
        "Sizes batches are padded to. Strictly increasing; the last must equal maxBatchSize.",
        default=(),
        max_items=MAX_BATCH_SIZES,
    )
    pad_variable_length_inputs: bool = field(
        "Pad inputs of different lengths to the same shape within a batch.", default=False
    )

    def check(self, path: str) -> list[FieldError]:
        errors = []
        sizes = self.allowed_batch_sizes
        for i in range(1, len(sizes)):
            if sizes[i] <= sizes[i - 1]:
                errors.append(
                    FieldError(
                        f"{path}.allowedBatchSizes",
                        f"must be strictly increasing, but {sizes[i]} follows {sizes[i - 1]}",
                    )
                )
                break
        if sizes and sizes[-1] != self.max_batch_size:
            errors.append(
                FieldError(
                    f"{path}.allowedBatchSizes",
                    f"last size ({sizes[-1]}) must equal maxBatchSize ({self.max_batch_size})",
                )
            )
        for i, size in enumerate(sizes):
            if size < 1:
                errors.append(FieldError(f"{path}.allowedBatchSizes[{i}]", f"must be at least 1, got {size}"))
                break
        return errors


@dataclass(frozen=True)
class Server(ApiObject):
    """TF Serving process settings."""

    __rules__ = (
        Rule(
            rule="self.grpcPort != self.restPort",
            message="grpcPort and restPort must differ",
            field_path=".restPort",
        ),
        Rule(
            rule=f"!(self.grpcPort in {_cel_list(tuple(RESERVED_PORTS.values()))})",
            message=f"grpcPort must not be {' or '.join(map(str, RESERVED_PORTS.values()))}: those ports "
            "are reserved for the health bridge; choose another port",
            field_path=".grpcPort",
        ),
        Rule(
            rule=f"!(self.restPort in {_cel_list(tuple(RESERVED_PORTS.values()))})",
            message=f"restPort must not be {' or '.join(map(str, RESERVED_PORTS.values()))}: those ports "
            "are reserved for the health bridge; choose another port",
            field_path=".restPort",
        ),
        Rule(
            rule=f"!has(self.extraArgs) || self.extraArgs.all(a, !(a in {_cel_list(MANAGED_FLAGS)}) && "
            f"!{_cel_list(tuple(f + '=' for f in MANAGED_FLAGS))}.exists(f, a.startsWith(f)))",
            message=f"extraArgs may not set a flag managed by tfleet ({', '.join(MANAGED_FLAGS)})",
            field_path=".extraArgs",
        ),
    )

    grpc_port: int = field("gRPC port (--port).", default=8500, minimum=1, maximum=65535)
    rest_port: int = field("REST port (--rest_api_port).", default=8501, minimum=1, maximum=65535)
    max_connection_age_seconds: int = field(
        "Maximum age of a gRPC connection before TF Serving asks the client to reconnect, so that "
        "long-lived connections rebalance across pods behind a ClusterIP Service. 0 disables it.",
        default=30,
        minimum=0,
    )
    monitoring: bool = field(
        "Expose Prometheus metrics on the REST port at /monitoring/prometheus/metrics.", default=True
    )
    model_load_timeout_seconds: int = field(
        "How long a new pod may take to load its model before kubelet restarts it (the startup "
        "probe's budget).",
        default=600,
        minimum=10,
    )
    model_config_poll_seconds: int = field(
        "How often TF Serving re-reads its model config file (--model_config_file_poll_wait_seconds). "
        "0 disables polling.",
        default=60,
        minimum=0,
    )
    extra_args: tuple[str, ...] = field(
        "Additional tensorflow_model_server flags, for example --tensorflow_intra_op_parallelism=4. "
        "Flags tfleet manages (ports, config files, batching) may not be repeated here.",
        default=(),
        max_items=MAX_EXTRA_ARGS,
    )

    def check(self, path: str) -> list[FieldError]:
        if self.grpc_port == self.rest_port:
            return [
                FieldError(
                    f"{path}.restPort",
                    f"restPort ({self.rest_port}) must differ from grpcPort ({self.grpc_port})",
                )
            ]
        return []


@dataclass(frozen=True)
class ServiceSpec(ApiObject):
    """How the model is exposed inside the cluster."""

    type: str = field(
        "Type of the load-balanced Service.",
        default="ClusterIP",
        enum=("ClusterIP", "NodePort", "LoadBalancer"),
    )
    headless: bool = field(
        "Also create a headless Service <name>-grpc, so gRPC clients can balance per request with "
        "client-side round_robin over dns:///<name>-grpc.<namespace>.svc:<grpcPort>.",
        default=True,
    )
    annotations: dict[str, str] = field(
        "Annotations for the load-balanced Service (for example cloud load balancer settings).",
        default_factory=dict,
        max_properties=MAX_MAP_ENTRIES,
        value_max_length=TOTAL_ANNOTATION_SIZE_LIMIT,
        rules=_annotation_map_rules("annotations"),
    )

    def check(self, path: str) -> list[FieldError]:
        return [FieldError(p, m) for p, m in annotation_problems(self.annotations, f"{path}.annotations")]


@dataclass(frozen=True)
class RolloutStep(ApiObject):
    """One canary step: the share of pods that run the new revision, and how long to hold it."""

    weight: int = field("Percentage of replicas on the new revision.", minimum=1, maximum=100)
    pause: Duration = field(
        "How long the step holds before the rollout moves on, for example 60s or 2m. The step moves "
        "on only when every canary pod is ready (its model version AVAILABLE) and no canary "
        "container restarted during the step.",
        default="60s",
    )


@dataclass(frozen=True)
class PrometheusAnalysis(ApiObject):
    """A Prometheus query that must stay within a threshold while a canary runs."""

    address: str = field(
        "Base URL of the Prometheus HTTP API, for example http://prometheus.monitoring:9090.",
        pattern=r"^https?://",
    )
    query: str = field(
        "PromQL instant query returning one number. {{revision}}, {{namespace}} and {{name}} are "
        "replaced by the canary revision, the namespace and the InferenceService name, for example "
        'sum(rate(errors_total{tfleet_dev_revision="{{revision}}"}[1m])).',
        min_length=1,
    )
    threshold: float = field("The limit the query result is compared with.")
    comparison: str = field(
        "LessOrEqual: the result must stay at or below the threshold (error rates, latencies). "
        "GreaterOrEqual: at or above it (success rates).",
        default="LessOrEqual",
        enum=("LessOrEqual", "GreaterOrEqual"),
    )
    interval: Duration = field("How often the query runs during a rollout.", default="30s")


# The built-in rollout defaults, where neither the object nor the cluster's defaults set them.
DEFAULT_ROLLOUT_STEPS = (RolloutStep(10, Duration("60s")), RolloutStep(50, Duration("120s")))
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600


@dataclass(frozen=True)
class BuiltinAnalysis(ApiObject):
    """Canary analysis from TF Serving's own metrics, without Prometheus. Each pod's health bridge reads its
    TF Serving's :tensorflow:serving:request_count (by status) and request_latency histogram; at each step,
    and during the promotion, the operator compares the canary's pods with the stable pods over the requests
    they served since the step began, and records the figures in status.rollout.analysis. A verdict needs
    minRequests on both sides; a failing figure rolls the canary back at once."""

    __rules__ = (
        Rule(
            rule="has(self.maxErrorRateIncrease) || has(self.maxLatencyRatio)",
            message="builtin analysis needs maxErrorRateIncrease, maxLatencyRatio or both",
        ),
    )

    max_error_rate_increase: float | None = field(
        "How much higher the canary's error rate may be than the stable pods', as a fraction: 0.01 allows "
        "one percentage point more. An error is a request TF Serving answered with a status other than OK.",
        default=None,
        minimum=0,
        maximum=1,
    )
    max_latency_ratio: float | None = field(
        "How many times the stable pods' p99 latency the canary's may be, for example 1.3. Both come from "
        "TF Serving's request_latency histogram (successful requests), whose buckets grow by a factor of "
        "1.8: a ratio is read to within about that factor, so keep it well above 1.",
        default=None,
        minimum=1,
    )
    min_requests: int = field(
        "Requests the canary pods and the stable pods must each have served during the step before a "
        "verdict is given; until then the step holds.",
        default=100,
        minimum=1,
    )
    on_insufficient_traffic: str = field(
        "What the progress deadline does to a step still short of minRequests: Fail rolls the canary back "
        "(\"not enough traffic to judge\"), Pass lets the step go on unjudged.",
        default="Fail",
        enum=("Fail", "Pass"),
    )
    interval: Duration = field("How often the figures are read during a rollout.", default="10s")

    def check(self, path: str) -> list[FieldError]:
        if self.max_error_rate_increase is None and self.max_latency_ratio is None:
            return [FieldError(path, "give maxErrorRateIncrease, maxLatencyRatio or both")]
        return []


@dataclass(frozen=True)
class Analysis(ApiObject):
    """Checks that gate each canary step and the promotion; a failed check rolls the canary back. With
    both, both must pass."""

    prometheus: PrometheusAnalysis | None = field("A Prometheus query check.", default=None)
    builtin: BuiltinAnalysis | None = field(
        "A comparison of the canary's pods with the stable pods, from TF Serving's own metrics (no "
        "Prometheus). Needs server.monitoring.",
        default=None,
    )


@dataclass(frozen=True)
class Rollout(ApiObject):
    """How a change to the pods (new model version, image, batching, resources, args) rolls out."""

    __rules__ = (
        Rule(
            rule="!has(self.steps) || " + _strictly_increasing("self.steps", MAX_ROLLOUT_STEPS, ".weight"),
            message="rollout step weights must be strictly increasing",
            field_path=".steps",
        ),
    )

    strategy: str = field(
        "Canary: shift replicas to the new revision step by step, gated on the model being "
        "AVAILABLE. RollingUpdate: replace pods in one Deployment with maxSurge/maxUnavailable.",
        default="Canary",
        enum=("Canary", "RollingUpdate"),
    )
    steps: tuple[RolloutStep, ...] = field(
        "Canary steps, in order; weights strictly increasing within 1..100. After the last step "
        "the new revision is promoted to all replicas. Default: the cluster's "
        "InferenceServiceDefaults rollout.steps, else [{weight: 10, pause: 60s}, {weight: 50, "
        "pause: 120s}]; a list given here replaces the default.",
        default=DEFAULT_ROLLOUT_STEPS,
        max_items=MAX_ROLLOUT_STEPS,
        publish_default=False,
    )
    progress_deadline_seconds: int = field(
        "How long a step may wait for healthy canary pods before the rollout fails. Default: the "
        f"cluster's InferenceServiceDefaults rollout.progressDeadlineSeconds, else {DEFAULT_PROGRESS_DEADLINE_SECONDS}.",
        default=DEFAULT_PROGRESS_DEADLINE_SECONDS,
        minimum=1,
        publish_default=False,
    )
    auto_rollback: bool = field(
        "Roll back by itself when the new revision fails its deadline or its checks.", default=True
    )
    max_surge: IntOrString = field(
        "RollingUpdate: pods above the replica count during the update (number or percentage).",
        default="25%",
    )
    max_unavailable: IntOrString = field(
        "RollingUpdate: pods that may be unavailable during the update (number or percentage).",
        default=0,
    )
    analysis: Analysis | None = field(
        "Canary: metric checks during each step. A check that fails rolls the canary back; a query "
        "that cannot run holds the step.",
        default=None,
    )
    min_ready_seconds: int = field(
        "How long a new pod must be ready before it counts as available.", default=0, minimum=0
    )
    revision_history_limit: int = field(
        "Earlier stable revisions kept (scaled to zero) for a fast rollback; older ones are deleted.",
        default=3,
        minimum=0,
        maximum=20,
    )

    def check(self, path: str) -> list[FieldError]:
        weights = [s.weight for s in self.steps]
        for i in range(1, len(weights)):
            if weights[i] <= weights[i - 1]:
                return [
                    FieldError(
                        f"{path}.steps[{i}].weight",
                        f"step weights must be strictly increasing, but {weights[i]} follows {weights[i - 1]}",
                    )
                ]
        return []


@dataclass(frozen=True)
class PodSettings(ApiObject):
    """Settings passed through to the serving pods."""

    __rules__ = (
        Rule(
            rule="!has(self.drainSeconds) || !has(self.terminationGracePeriodSeconds) || "
            "self.drainSeconds < self.terminationGracePeriodSeconds",
            message="drainSeconds must be less than terminationGracePeriodSeconds",
            field_path=".drainSeconds",
        ),
    )

    node_selector: dict[str, str] = field(
        "Node labels the pods require.", default_factory=dict, max_properties=MAX_MAP_ENTRIES,
        value_max_length=LABEL_VALUE_MAX, rules=_label_map_rules("nodeSelector"),
    )
    tolerations: tuple[Toleration, ...] = field("Tolerations of the pods.", default=(), max_items=MAX_TOLERATIONS)
    affinity: Passthrough | None = field(
        "Pod affinity rules, exactly as in a Pod spec (passed through unchanged: the operator, "
        "not admission, checks the fields and their types, reporting InvalidSpec; the API server "
        "checks the rest when the Deployment is written).",
        default=None,
    )
    service_account_name: str | None = field(
        "ServiceAccount the pods run as (for example one bound to a cloud storage role).", default=None,
        pattern=OBJECT_NAME_PATTERN, max_length=253,
    )
    annotations: dict[str, str] = field(
        "Annotations added to the pods, merged with the cluster's InferenceServiceDefaults "
        "pod.annotations (a key set here wins).", default_factory=dict, max_properties=MAX_MAP_ENTRIES,
        value_max_length=TOTAL_ANNOTATION_SIZE_LIMIT, rules=_annotation_map_rules("annotations"),
    )
    labels: dict[str, str] = field(
        "Labels added to the pods, merged with the cluster's InferenceServiceDefaults pod.labels (a "
        "key set here wins). tfleet's own labels take precedence.", default_factory=dict,
        max_properties=MAX_MAP_ENTRIES, value_max_length=LABEL_VALUE_MAX, rules=_label_map_rules("labels"),
    )
    priority_class_name: str | None = field(
        "PriorityClass of the pods. Default: the cluster's InferenceServiceDefaults "
        "pod.priorityClassName.", default=None, pattern=OBJECT_NAME_PATTERN, max_length=253
    )
    image_pull_secrets: tuple[str, ...] = field(
        "Names of Secrets (in the same namespace) used to pull the images; the cluster's "
        "InferenceServiceDefaults pod.imagePullSecrets come first.", default=()
    )
    termination_grace_period_seconds: int = field(
        "How long a stopping pod drains before it is killed. TF Serving ignores SIGTERM, so the pod "
        "first fails readiness and waits drainSeconds for clients to move away.",
        default=45,
        minimum=1,
    )
    drain_seconds: int = field(
        "How long a stopping pod keeps serving after it has been removed from the Service "
        "endpoints. Must be shorter than terminationGracePeriodSeconds.",
        default=15,
        minimum=0,
    )

    def check(self, path: str) -> list[FieldError]:
        # Labels, selectors and annotations are copied onto the pods: the API server's rules
        # for them apply (a nodeSelector is validated as labels).
        problems = [
            *label_problems(self.node_selector, f"{path}.nodeSelector"),
            *label_problems(self.labels, f"{path}.labels"),
            *annotation_problems(self.annotations, f"{path}.annotations"),
        ]
        if self.affinity is not None:
            from tfleet.api.kubetypes import shape_problems

            problems.extend(shape_problems(self.affinity, "V1Affinity", f"{path}.affinity"))
        errors = [FieldError(p, m) for p, m in problems]
        if self.drain_seconds >= self.termination_grace_period_seconds:
            errors.append(
                FieldError(
                    f"{path}.drainSeconds",
                    f"drainSeconds ({self.drain_seconds}) must be less than "
                    f"terminationGracePeriodSeconds ({self.termination_grace_period_seconds})",
                )
            )
        return errors


@dataclass(frozen=True)
class InferenceServiceSpec(ApiObject):
    """The desired state of a TF Serving fleet serving one model."""

    __rules__ = (
        Rule(
            rule="!has(self.image) || !has(self.gpu) || !has(self.gpu.count) || self.gpu.count == 0 || "
            + GPU_IMAGE_RULE,
            message=GPU_IMAGE_MESSAGE,
            field_path=".image",
        ),
        Rule(
            rule="!has(self.rollout) || !has(self.rollout.analysis) || !has(self.rollout.analysis.builtin) || "
            "!has(self.server) || !has(self.server.monitoring) || self.server.monitoring",
            message=BUILTIN_NEEDS_MONITORING,
            field_path=".rollout.analysis.builtin",
        ),
    )

    model: ModelSpec = field("The model to serve.")
    image: str | None = field(
        "TF Serving image. Default: from the cluster's InferenceServiceDefaults image, else "
        f"{DEFAULT_IMAGE}, or its -gpu variant when gpu.count > 0; with gpu.count > 0 an image "
        "given here must be a GPU image (a tag ending in -gpu). The defaults' registry mirrors "
        "apply to it.",
        default=None,
        min_length=1,
        max_length=IMAGE_MAX_LENGTH,
    )
    replicas: int = field(
        "Number of serving pods. Managed by the autoscaler when autoscaling is set.",
        default=1,
        minimum=0,
    )
    autoscaling: Autoscaling | None = field(
        "Autoscale the replica count with a HorizontalPodAutoscaler.", default=None
    )
    resources: Resources = field(
        "Resources of the TF Serving container. A resource named here (in requests or limits) takes "
        "nothing from the cluster's InferenceServiceDefaults resources; the others come from there.",
        default_factory=Resources)
    gpu: Gpu = field("GPU scheduling.", default_factory=Gpu)
    batching: Batching | None = field(
        "Server-side batching. Omitted: batching is off.", default=None
    )
    server: Server = field("TF Serving process settings.", default_factory=Server)
    service: ServiceSpec = field("Service settings.", default_factory=ServiceSpec)
    rollout: Rollout = field("How changes roll out.", default_factory=Rollout)
    pod: PodSettings = field("Pod settings passed through to the serving pods.", default_factory=PodSettings)

    def check(self, path: str) -> list[FieldError]:
        errors: list[FieldError] = []
        image = self.image or DEFAULT_IMAGE
        if self.gpu.count > 0 and self.image and not _is_gpu_image(image):
            errors.append(
                FieldError(
                    f"{path}.image",
                    f'"{image}" is not a GPU image, but gpu.count is {self.gpu.count}: '
                    "use a tag ending in -gpu (for example tensorflow/serving:2.19.0-gpu)",
                )
            )
        for i, arg in enumerate(self.server.extra_args):
            flag = arg.split("=", 1)[0]
            if flag in MANAGED_FLAGS:
                errors.append(
                    FieldError(f"{path}.server.extraArgs[{i}]", f"{flag} is managed by tfleet and may not be set here")
                )
        analysis = self.rollout.analysis
        if analysis is not None and analysis.builtin is not None and not self.server.monitoring:
            errors.append(FieldError(f"{path}.rollout.analysis.builtin", BUILTIN_NEEDS_MONITORING))
        ports = {"grpcPort": self.server.grpc_port, "restPort": self.server.rest_port}
        for name, port in RESERVED_PORTS.items():
            for field_name, value in ports.items():
                if value == port:
                    errors.append(
                        FieldError(
                            f"{path}.server.{field_name}",
                            f"port {value} is reserved for the {name}; choose another port",
                        )
                    )
        return errors


def _is_gpu_image(image: str) -> bool:
    # The tag is after the last ":" that follows the last "/" (a registry may carry a port).
    name = image.split("@", 1)[0]
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
    return tag == "gpu" or tag.endswith("-gpu") or "-gpu-" in tag or "gpu" in name.rsplit("/", 1)[-1].split(":")[0]


# Fields of the spec that the cluster's InferenceServiceDefaults fill when the object leaves
# them out (JSON paths under spec). Their built-in defaults stay out of the CRD, so that the
# API server stores no value for them: an object that sets one is told apart from one that
# does not. Maps and lists that merge with the defaults (pod.labels, pod.annotations,
# pod.imagePullSecrets, resources) need no entry: their merge does not depend on presence.
DEFAULTABLE_FIELDS = ("image", "gpu.resourceName", "gpu.nodeSelector", "gpu.tolerations", "rollout.steps",
                      "rollout.progressDeadlineSeconds", "pod.priorityClassName")


def unset_fields(spec: Any) -> frozenset[str]:
    """The DEFAULTABLE_FIELDS a raw spec leaves out (absent or null)."""
    unset = []
    for path in DEFAULTABLE_FIELDS:
        node = spec
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            unset.append(path)
    return frozenset(unset)


@dataclass(frozen=True)
class InferenceService:
    """A parsed InferenceService: identity plus the typed spec."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: InferenceServiceSpec
    # Which DEFAULTABLE_FIELDS the object leaves out; `spec` holds the built-in defaults for
    # them until the cluster's defaults are applied (tfleet.desired.defaulting), which empties it.
    unset: frozenset[str] = frozenset()

    @property
    def model_name(self) -> str:
        return self.spec.model.name or self.name

    @property
    def replicas(self) -> int:
        """The pods to run: spec.replicas, kept within the autoscaler's bounds, so a new
        InferenceService starts at minReplicas rather than being resized right after."""
        autoscaling = self.spec.autoscaling
        if autoscaling is None:
            return self.spec.replicas
        return min(max(self.spec.replicas, autoscaling.min_replicas), autoscaling.max_replicas)

    @property
    def image(self) -> str:
        if self.spec.image:
            return self.spec.image
        return DEFAULT_IMAGE + "-gpu" if self.spec.gpu.count > 0 else DEFAULT_IMAGE


def parse_spec(spec: Any, path: str = "spec") -> InferenceServiceSpec:
    """Parse and validate a spec. Raises ValidationError whose errors name each field."""
    return parse(InferenceServiceSpec, spec, path)


def check_update(old: InferenceServiceSpec, new: InferenceServiceSpec, path: str = "spec") -> list[FieldError]:
    """Rules on a change of spec, mirroring the CRD's transition rules (those with oldSelf)."""
    if old.model.name != new.model.name:
        return [
            FieldError(
                f"{path}.model.name",
                f"is immutable: was {old.model.name or '(unset)'}, now {new.model.name or '(unset)'}",
            )
        ]
    return []


def parse_object(obj: dict[str, Any]) -> InferenceService:
    """Parse a whole InferenceService object (as read from the API or a manifest)."""
    meta = obj.get("metadata")
    errors: list[FieldError] = []
    if meta is not None and not isinstance(meta, dict):
        errors.append(FieldError("metadata", "must be an object"))
    meta = meta if isinstance(meta, dict) else {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        errors.append(FieldError("metadata.name", "required field is missing"))
    elif not go_regex(SERVICE_NAME_PATTERN).match(name) or len(name) > NAME_MAX_LENGTH:
        # Children are named <name>, <name>-grpc, <name>-config: the name must stay a valid
        # Service name (a DNS-1035 label) with room for the suffixes.
        errors.append(
            FieldError(
                "metadata.name",
                f'"{name}" must be a DNS label of at most {NAME_MAX_LENGTH} characters (a-z, 0-9, -) '
                "that starts with a letter",
            )
        )
    # The API server checks these on admission; a manifest rendered offline has not been there.
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value is not None and not isinstance(value, dict):
            errors.append(FieldError(f"metadata.{key}", "must be an object"))
        elif value:
            check = label_problems if key == "labels" else annotation_problems
            errors.extend(FieldError(p, m) for p, m in check(value, f"metadata.{key}"))
    try:
        if obj.get("spec") is None:
            raise ValidationError([FieldError("spec", "required field is missing")])
        spec = parse_spec(obj.get("spec"))
    except ValidationError as exc:
        errors.extend(exc.errors)
        spec = None
    if errors or spec is None or not isinstance(name, str):
        raise ValidationError(errors)
    return InferenceService(
        name=name,
        namespace=meta.get("namespace") or "default",
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation") or 0),
        spec=spec,
        unset=unset_fields(obj.get("spec")),
    )
