"""The resource registry: built-in kinds and the custom resources of served CRDs.

A ``ResourceType`` is one group/version/plural as clients address it. Several types may
share one storage (``events`` in core/v1 and events.k8s.io/v1, the versions of a CRD),
like the real apiserver keeps one etcd key per group and resource and converts on the way
in and out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUB_VERBS = ("get", "patch", "update")

Converter = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class ScaleSpec:
    """Where a kind keeps what the ``/scale`` subresource reads and writes."""

    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    label_selector: str | None = ".status.selector"


@dataclass
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    status: bool = False
    scale: ScaleSpec | None = None
    # Kinds whose spec changes bump metadata.generation (status changes never do).
    generation: bool = False
    crd: dict[str, Any] | None = None
    storage_version: bool = True
    # Conversion between this version and the shared storage form.
    to_storage: Converter | None = None
    from_storage: Converter | None = None
    extra_subresources: tuple[str, ...] = ()
    _storage: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not self.singular:
            self.singular = self.kind.lower()
        if not self._storage:
            self._storage = f"{self.group}/{self.plural}"

    @property
    def key(self) -> str:
        """The in-process name: ``apps/v1/deployments``, ``v1/pods`` for the core group."""
        return (
            f"{self.group}/{self.version}/{self.plural}"
            if self.group
            else f"{self.version}/{self.plural}"
        )

    @property
    def storage(self) -> str:
        return self._storage

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def gvk(self) -> str:
        """``apps/v1/Deployment`` (``v1/Pod`` for core), the kind name the patch algorithms take."""
        return f"{self.api_version}/{self.kind}"

    @property
    def is_custom(self) -> bool:
        return self.crd is not None

    @property
    def subresources(self) -> list[str]:
        subs = []
        if self.status:
            subs.append("status")
        if self.scale is not None:
            subs.append("scale")
        subs.extend(self.extra_subresources)
        return subs

    def selectable_fields(self) -> frozenset[str]:
        """The field labels a field selector may use on this kind, like the real server's."""
        if self.crd is not None:
            for ver in self.crd.get("spec", {}).get("versions", []):
                if ver.get("name") == self.version:
                    return frozenset(f.get("jsonPath", "").lstrip(".")
                                     for f in ver.get("selectableFields") or [])
            return frozenset()
        return FIELD_LABELS.get(self.gvk, frozenset())

    def printer_columns(self) -> list[dict[str, Any]]:
        if self.crd is None:
            return []
        for ver in self.crd.get("spec", {}).get("versions", []):
            if ver.get("name") == self.version:
                return list(ver.get("additionalPrinterColumns") or [])
        return []

    def schema(self) -> dict[str, Any] | None:
        if self.crd is None:
            return None
        for ver in self.crd.get("spec", {}).get("versions", []):
            if ver.get("name") == self.version:
                return (ver.get("schema") or {}).get("openAPIV3Schema")
        return None


# --- events: one storage, two API versions -------------------------------------------------

_EVENT_RENAMES = (
    # (core/v1 field, events.k8s.io/v1 field)
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
)


def _event_to_core(obj: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k not in {new for _, new in _EVENT_RENAMES}}
    for old, new in _EVENT_RENAMES:
        if new in obj:
            out[old] = obj[new]
    out["apiVersion"] = "v1"
    return out


def _event_from_core(obj: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k not in {old for old, _ in _EVENT_RENAMES}}
    for old, new in _EVENT_RENAMES:
        if old in obj:
            out[new] = obj[old]
    out["apiVersion"] = "events.k8s.io/v1"
    return out


_EVENT_FIELDS = ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                 "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                 "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type")
FIELD_LABELS: dict[str, frozenset[str]] = {
    "v1/Pod": frozenset({"spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                         "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP",
                         "status.podIPs", "status.nominatedNodeName"}),
    "v1/Event": frozenset(_EVENT_FIELDS),
    "events.k8s.io/v1/Event": frozenset({
        "regarding.kind", "regarding.namespace", "regarding.name", "regarding.uid",
        "regarding.apiVersion", "regarding.resourceVersion", "regarding.fieldPath", "reason",
        "reportingController", "type"}),
    "v1/Secret": frozenset({"type"}),
    "v1/Node": frozenset({"spec.unschedulable"}),
    "v1/Namespace": frozenset({"status.phase"}),
    "v1/ReplicationController": frozenset({"status.replicas"}),
    "apps/v1/ReplicaSet": frozenset({"status.replicas"}),
    "batch/v1/Job": frozenset({"status.successful"}),
}


def _builtin(
    group: str, version: str, plural: str, kind: str, namespaced: bool = True, **kw: Any
) -> ResourceType:
    return ResourceType(group, version, plural, kind, namespaced, **kw)


_WORKLOAD: dict[str, Any] = {"status": True, "generation": True, "scale": ScaleSpec(), "categories": ("all",)}

BUILTINS: list[ResourceType] = [
    _builtin(
        "",
        "v1",
        "namespaces",
        "Namespace",
        False,
        short_names=("ns",),
        status=True,
        extra_subresources=("finalize",),
    ),
    _builtin("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    _builtin("", "v1", "secrets", "Secret"),
    _builtin(
        "", "v1", "services", "Service", short_names=("svc",), status=True, categories=("all",)
    ),
    _builtin("", "v1", "endpoints", "Endpoints", short_names=("ep",), singular="endpoints"),
    _builtin(
        "",
        "v1",
        "pods",
        "Pod",
        short_names=("po",),
        status=True,
        categories=("all",),
        extra_subresources=("log",),
    ),
    _builtin("", "v1", "events", "Event", short_names=("ev",)),
    _builtin("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _builtin("", "v1", "nodes", "Node", False, short_names=("no",), status=True),
    _builtin(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        short_names=("pvc",),
        status=True,
    ),
    _builtin(
        "", "v1", "persistentvolumes", "PersistentVolume", False, short_names=("pv",), status=True
    ),
    _builtin("", "v1", "resourcequotas", "ResourceQuota", short_names=("quota",), status=True),
    _builtin("", "v1", "limitranges", "LimitRange", short_names=("limits",)),
    _builtin(
        "",
        "v1",
        "replicationcontrollers",
        "ReplicationController",
        short_names=("rc",),
        **_WORKLOAD,
    ),
    _builtin("apps", "v1", "deployments", "Deployment", short_names=("deploy",), **_WORKLOAD),
    _builtin("apps", "v1", "replicasets", "ReplicaSet", short_names=("rs",), **_WORKLOAD),
    _builtin("apps", "v1", "statefulsets", "StatefulSet", short_names=("sts",), **_WORKLOAD),
    _builtin(
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        short_names=("ds",),
        status=True,
        generation=True,
        categories=("all",),
    ),
    _builtin("apps", "v1", "controllerrevisions", "ControllerRevision"),
    _builtin("batch", "v1", "jobs", "Job", status=True, generation=True, categories=("all",)),
    _builtin(
        "batch",
        "v1",
        "cronjobs",
        "CronJob",
        short_names=("cj",),
        status=True,
        generation=True,
        categories=("all",),
    ),
    _builtin(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        short_names=("hpa",),
        status=True,
        generation=True,
        categories=("all",),
    ),
    _builtin(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        short_names=("pdb",),
        status=True,
        generation=True,
    ),
    _builtin("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    _builtin(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        short_names=("ev",),
        to_storage=_event_to_core,
        from_storage=_event_from_core,
        _storage="/events",
    ),
    _builtin("coordination.k8s.io", "v1", "leases", "Lease"),
    _builtin(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "Ingress",
        short_names=("ing",),
        status=True,
        generation=True,
    ),
    _builtin(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        short_names=("netpol",),
        generation=True,
    ),
    _builtin("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False),
    _builtin(
        "scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False, short_names=("pc",)
    ),
    _builtin("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, short_names=("sc",)),
    _builtin("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _builtin("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _builtin("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _builtin("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _builtin(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        False,
    ),
    _builtin(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        False,
    ),
    # Reviews are answered, never stored: the local control plane authorizes everything.
    _builtin("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False,
             verbs=("create",)),
    _builtin("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview", False,
             verbs=("create",)),
    _builtin("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", False,
             verbs=("create",)),
    _builtin("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", False,
             verbs=("create",)),
    _builtin(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        short_names=("crd", "crds"),
        status=True,
        generation=True,
    ),
]

# Preferred order of groups in discovery, like the real server lists them.
GROUP_ORDER = [
    "",
    "apps",
    "events.k8s.io",
    "autoscaling",
    "batch",
    "policy",
    "discovery.k8s.io",
    "coordination.k8s.io",
    "networking.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "rbac.authorization.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "authorization.k8s.io",
    "authentication.k8s.io",
]


def types_for_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """One ResourceType per served version of a CRD."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    group = spec.get("group", "")
    types = []
    for ver in spec.get("versions", []):
        if not ver.get("served", True):
            continue
        subs = ver.get("subresources") or {}
        scale = None
        if "scale" in subs:
            sc = subs["scale"] or {}
            scale = ScaleSpec(
                sc.get("specReplicasPath", ".spec.replicas"),
                sc.get("statusReplicasPath", ".status.replicas"),
                sc.get("labelSelectorPath"),
            )
        types.append(
            ResourceType(
                group=group,
                version=ver["name"],
                plural=names.get("plural", ""),
                kind=names.get("kind", ""),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular") or names.get("kind", "").lower(),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status="status" in subs,
                scale=scale,
                generation=True,
                crd=crd,
                storage_version=bool(ver.get("storage")),
            )
        )
    return types


class Registry:
    """Lookup of resource types by key, by (group, version, plural) and by storage."""

    def __init__(self) -> None:
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        self.generation = 0  # bumps on every change; discovery and OpenAPI caches key on it
        for rt in BUILTINS:
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self._by_gvr[(rt.group, rt.version, rt.plural)] = rt
        self.generation += 1

    def remove_crd(self, crd_name: str) -> list[ResourceType]:
        gone = [
            rt
            for rt in self._by_gvr.values()
            if rt.crd is not None and rt.crd["metadata"]["name"] == crd_name
        ]
        for rt in gone:
            del self._by_gvr[(rt.group, rt.version, rt.plural)]
        self.generation += 1
        return gone

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvr.get((group, version, plural))

    def by_key(self, key: str) -> ResourceType:
        parts = key.split("/")
        if len(parts) == 2:
            rt = self._by_gvr.get(("", parts[0], parts[1]))
        elif len(parts) == 3:
            rt = self._by_gvr.get((parts[0], parts[1], parts[2]))
        else:
            rt = None
        if rt is None:
            raise KeyError(
                f"unknown resource {key!r} (use '<group>/<version>/<plural>', 'v1/<plural>' for core)"
            )
        return rt

    def all(self) -> list[ResourceType]:
        return list(self._by_gvr.values())

    def by_storage(self, storage: str) -> list[ResourceType]:
        return [rt for rt in self._by_gvr.values() if rt.storage == storage]

    def storage_type(self, storage: str) -> ResourceType | None:
        """The type whose form is the storage form (no converter, the storage version)."""
        candidates = self.by_storage(storage)
        for rt in candidates:
            if rt.to_storage is None and rt.storage_version:
                return rt
        return candidates[0] if candidates else None

    def groups(self) -> dict[str, list[str]]:
        """Group -> served versions, in discovery order (preferred version first)."""
        out: dict[str, list[str]] = {}
        order = {g: i for i, g in enumerate(GROUP_ORDER)}
        for rt in sorted(self._by_gvr.values(), key=lambda r: (order.get(r.group, 99), r.group)):
            versions = out.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        for group, versions in out.items():
            versions.sort(key=_version_priority)
            out[group] = versions
        return out

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self._by_gvr.values() if rt.group == group and rt.version == version]


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes version ordering: GA > beta > alpha, higher numbers first."""
    import re

    m = re.match(r"^v(\d+)(?:(alpha|beta)(\d+))?$", version)
    if not m:
        return (3, 0, 0)
    major, stage, minor = int(m.group(1)), m.group(2), int(m.group(3) or 0)
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -major, -minor)
