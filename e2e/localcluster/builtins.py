"""Defaulting and validation of the built-in kinds (the parts clients notice).

The real apiserver defaults many fields on write; controllers, ``kubectl describe``,
``helm --wait`` and our operator read them back (a Deployment's strategy, a Service's
clusterIP, a Pod's phase). Only what a client could observe is reproduced here.
"""

from __future__ import annotations

import base64
import ipaddress
import random
from typing import Any

from . import errors, validation
from .objects import get_path, name_problems, now
from .resources import ResourceType
from .selectors import matches_label_selector

Cause = dict[str, Any]


def _default_container(c: dict[str, Any]) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    image = c.get("image", "")
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
    c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = c.get(probe_name)
        if isinstance(probe, dict):
            probe.setdefault("timeoutSeconds", 1)
            probe.setdefault("periodSeconds", 10)
            probe.setdefault("successThreshold", 1)
            probe.setdefault("failureThreshold", 3)


def default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    if "serviceAccountName" not in spec and "serviceAccount" in spec:
        spec["serviceAccountName"] = spec["serviceAccount"]
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if isinstance(c, dict):
            _default_container(c)


def qos_class(spec: dict[str, Any]) -> str:
    """BestEffort, Burstable or Guaranteed, from the containers' cpu/memory requests and limits."""
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    any_set, guaranteed = False, True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        for r in ("cpu", "memory"):
            if r in req or r in lim:
                any_set = True
            if r not in lim or str(req.get(r, lim[r])) != str(lim[r]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _default_deployment(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        ru = strategy.setdefault("rollingUpdate", {})
        ru.setdefault("maxSurge", "25%")
        ru.setdefault("maxUnavailable", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    default_pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))


def _default_service(obj: dict[str, Any], allocate_ip: Any) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        if not spec.get("clusterIP"):
            spec["clusterIP"] = allocate_ip()
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
        for i, port in enumerate(spec.get("ports") or []):
            port.setdefault("nodePort", 30000 + (hash(obj["metadata"]["name"]) + i) % 2767)
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


def default(rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None,
            allocate_ip: Any) -> None:
    """Fill in server defaults in place (create and update alike, like the real defaulters)."""
    kind = rt.kind
    if rt.group == "" and kind == "Pod":
        spec = obj.setdefault("spec", {})
        default_pod_spec(spec)
        status = obj.setdefault("status", {})
        status.setdefault("phase", "Pending")
        status["qosClass"] = qos_class(spec)
        spec.setdefault("priority", 0)
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    elif kind == "Deployment":
        _default_deployment(obj)
    elif kind in ("ReplicaSet", "StatefulSet", "ReplicationController"):
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        default_pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))
        if kind == "StatefulSet":
            spec.setdefault("podManagementPolicy", "OrderedReady")
            spec.setdefault("updateStrategy", {"type": "RollingUpdate",
                                               "rollingUpdate": {"partition": 0}})
            spec.setdefault("revisionHistoryLimit", 10)
    elif kind == "DaemonSet" or (kind == "Job" and rt.group == "batch"):
        default_pod_spec(obj.setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {}))
    elif rt.group == "" and kind == "Service":
        _default_service(obj, allocate_ip)
    elif rt.group == "" and kind == "Secret":
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None)
        if string_data:
            data = obj.setdefault("data", {})
            for k, v in string_data.items():
                data[k] = base64.b64encode(str(v).encode()).decode()
    elif rt.group == "" and kind == "Namespace":
        spec = obj.setdefault("spec", {})
        spec.setdefault("finalizers", ["kubernetes"])
        status = obj.setdefault("status", {})
        status.setdefault("phase", "Active")
        labels = obj["metadata"].setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    elif kind == "HorizontalPodAutoscaler":
        spec = obj.setdefault("spec", {})
        spec.setdefault("minReplicas", 1)
        if not spec.get("metrics"):
            spec["metrics"] = [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
    elif kind == "PodDisruptionBudget":
        obj.setdefault("status", {}).setdefault("disruptionsAllowed", 0)
    elif kind == "NetworkPolicy" and rt.group == "networking.k8s.io":
        # pkg/apis/networking/v1/defaults.go: SetDefaults_NetworkPolicy, SetDefaults_NetworkPolicyPort.
        spec = obj.setdefault("spec", {})
        if not spec.get("policyTypes"):
            spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
        for direction in ("ingress", "egress"):
            for rule in spec.get(direction) or []:
                for port in rule.get("ports") or []:
                    if isinstance(port, dict):
                        port.setdefault("protocol", "TCP")
    elif kind == "Event" and rt.group == "":
        obj.setdefault("firstTimestamp", obj.get("lastTimestamp") or None)
        obj.setdefault("reportingComponent", (obj.get("source") or {}).get("component", ""))
        obj.setdefault("reportingInstance", "")
        obj.setdefault("involvedObject", {})
        obj.setdefault("type", "Normal")


def _immutable(causes: list[Cause], field: str, new: Any, old: Any) -> None:
    if new != old:
        causes.append({"reason": "FieldValueInvalid",
                       "message": "Invalid value: " + _show(new) + ": field is immutable",
                       "field": field})


def _show(value: Any) -> str:
    import json

    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "v1.LabelSelector{" + json.dumps(value, separators=(",", ":")) + "}"
    return json.dumps(value)


def validate(rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    """The validation failures of a built-in object (a subset of the real rules, see validation.py)."""
    causes: list[Cause] = []
    kind = rt.kind
    spec = obj.get("spec") or {}
    if kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet") and rt.group == "apps":
        selector = spec.get("selector")
        labels = get_path(spec, ".template.metadata.labels") or {}
        if not selector:
            causes.append(errors.required("spec.selector"))
        elif not selector.get("matchLabels") and not selector.get("matchExpressions"):
            causes.append(validation.invalid("spec.selector", selector,
                                             f"empty selector is invalid for {kind.lower()}"))
        elif not matches_label_selector(selector, labels):
            causes.append({
                "reason": "FieldValueInvalid",
                "message": "Invalid value: " + _show(labels) + ": `selector` does not match template `labels`",
                "field": "spec.template.metadata.labels",
            })
        if old is not None and selector:
            _immutable(causes, "spec.selector", selector, (old.get("spec") or {}).get("selector"))
        causes.extend(validation.validate_label_map(labels, "spec.template.metadata.labels"))
        causes.extend(validation.validate_pod_spec(get_path(spec, ".template.spec") or {},
                                                   "spec.template.spec", template=True))
        replicas = spec.get("replicas")
        if isinstance(replicas, int) and replicas < 0:
            causes.append(errors.invalid_value(
                "spec.replicas", replicas, "must be greater than or equal to 0"))
    elif kind == "Job" and rt.group == "batch":
        causes.extend(validation.validate_pod_spec(get_path(spec, ".template.spec") or {}, "spec.template.spec"))
    elif kind == "Pod" and rt.group == "":
        causes.extend(validation.validate_pod_spec(spec, "spec"))
        if old is not None:
            old_spec = old.get("spec") or {}
            old_names = [c.get("name") for c in old_spec.get("containers") or []]
            new_names = [c.get("name") for c in spec.get("containers") or []]
            if old_names != new_names or (old_spec.get("nodeName") and
                                          spec.get("nodeName") != old_spec.get("nodeName")):
                causes.append({"reason": "FieldValueForbidden",
                               "message": "Forbidden: pod updates may not change fields other "
                                          "than `spec.containers[*].image`, "
                                          "`spec.initContainers[*].image`, "
                                          "`spec.activeDeadlineSeconds`, `spec.tolerations` "
                                          "(only additions to existing tolerations), "
                                          "`spec.terminationGracePeriodSeconds` (allow it to be "
                                          "set to 1 if it was previously negative)",
                               "field": "spec"})
    elif kind == "Service" and rt.group == "":
        if old is not None:
            old_ip = (old.get("spec") or {}).get("clusterIP")
            if old_ip and spec.get("clusterIP") != old_ip:
                _immutable(causes, "spec.clusterIPs[0]", spec.get("clusterIP"), old_ip)
        if spec.get("type") != "ExternalName" and not spec.get("ports") and spec.get("clusterIP") != "None":
            causes.append(errors.required("spec.ports"))
        causes.extend(validation.validate_service(spec))
    elif kind in ("ConfigMap", "Secret") and rt.group == "":
        causes.extend(validation.validate_config_keys(obj))
        if old is not None and old.get("immutable"):
            for f in ("data", "binaryData"):
                if obj.get(f) != old.get(f):
                    causes.append({"reason": "FieldValueForbidden",
                                   "message": "Forbidden: field is immutable when `immutable` is set",
                                   "field": f})
            if obj.get("immutable") is not True:
                causes.append({"reason": "FieldValueForbidden",
                               "message": "Forbidden: field is immutable when `immutable` is set",
                               "field": "immutable"})
        if kind == "Secret":
            for k, v in (obj.get("data") or {}).items():
                try:
                    base64.b64decode(v or "", validate=True)
                except (ValueError, TypeError):
                    causes.append(errors.invalid_value(f"data[{k}]", "<secret contents redacted>",
                                                       "illegal base64 data"))
    elif kind == "Namespace" and rt.group == "":
        problem = name_problems(obj["metadata"].get("name", ""), "label")
        if problem:
            causes.append(errors.invalid_value("metadata.name", obj["metadata"].get("name", ""), problem))
    elif kind == "PodDisruptionBudget":
        causes.extend(validation.validate_pdb(spec))
    elif kind == "HorizontalPodAutoscaler":
        causes.extend(validation.validate_hpa(spec))
    elif kind == "NetworkPolicy" and rt.group == "networking.k8s.io":
        causes.extend(validation.validate_network_policy(spec))
    elif kind == "Event" and rt.group == "" and not obj.get("eventTime"):
        # pkg/apis/core/validation/events.go, legacyValidateEvent: an Event lives in its
        # object's namespace; one about a cluster-scoped object (no namespace) in "default".
        involved = str((obj.get("involvedObject") or {}).get("namespace") or "")
        namespace = obj["metadata"].get("namespace") or ""
        if (namespace not in ("", "default")) if not involved else namespace != involved:
            causes.append(errors.invalid_value("involvedObject.namespace", involved, "does not match event.namespace"))
    return causes


def name_rule(rt: ResourceType) -> str:
    if rt.group == "" and rt.kind in ("Namespace", "Service"):
        return "label" if rt.kind == "Namespace" else "dns1035"
    return "subdomain"


# Service cluster IPs come from a /16 of 127.0.0.0/8: on Linux the whole of 127/8 is local
# (the `lo` route is 127.0.0.0/8), so the local kube-proxy can listen on every ClusterIP
# without creating an interface, and no traffic to a Service leaves the machine.
SERVICE_CIDR = "127.96.0.0/16"


class IPAllocator:
    """Hands out Service cluster IPs from ``SERVICE_CIDR`` as the apiserver does
    (pkg/registry/core/service/ipallocator and allocator/bitmap.go,
    randomScanStrategyWithOffset): never the network or broadcast address; dynamic
    allocations start at a random address of the upper part of the range and scan forward,
    the lower 256 addresses (from .0.1, which a real cluster gives to the ``kubernetes``
    Service) are left to Services that ask for an IP and used only when the rest is full.
    Random placement also keeps two local clusters on one machine from handing out the
    same ClusterIPs at once."""

    def __init__(self, cidr: str = SERVICE_CIDR, rng: random.Random | None = None) -> None:
        self.cidr = cidr
        self._net = ipaddress.ip_network(cidr)
        self._first = int(self._net.network_address) + 1
        self._size = self._net.num_addresses - 2
        # ipallocator.go calculateRangeOffset: range size / 16, clamped to [16, 256]
        offset = 0 if self._net.num_addresses < 16 else min(max(self._net.num_addresses // 16, 16), 256)
        self._offset = min(offset, self._size)
        self._rng = rng or random.Random()
        self._used: set[str] = set()

    def allocate(self) -> str:
        upper = self._size - self._offset
        for low, span in ((self._offset, upper), (0, self._offset)):
            if span <= 0:
                continue
            start = self._rng.randrange(span)
            for i in range(span):
                ip = str(ipaddress.ip_address(self._first + low + (start + i) % span))
                if ip not in self._used:
                    self._used.add(ip)
                    return ip
        raise errors.internal(f"failed to allocate a serviceIP: range is full ({self.cidr})")

    def claim_problem(self, ip: str) -> str | None:
        """Why ``ip`` cannot be given to a Service that asks for it, or None. The texts are
        the apiserver's (pkg/registry/core/service/ipallocator: ErrNotInRange, ErrAllocated)."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return f"failed to parse IP {ip!r}"
        if address not in self._net or address in (self._net[0], self._net[-1]):
            return (f"the provided IP ({ip}) is not in the valid range. "
                    f"The range of valid IPs is {self.cidr}")
        if ip in self._used:
            return "provided IP is already allocated"
        return None

    def claim(self, ip: str) -> None:
        self._used.add(ip)

    def release(self, ip: str | None) -> None:
        if ip:
            self._used.discard(ip)


def crd_status(crd: dict[str, Any], old_status: dict[str, Any] | None) -> dict[str, Any]:
    """The status the real CRD controllers converge to for an accepted, established CRD."""
    spec = crd.get("spec", {})
    names = dict(spec.get("names") or {})
    names.setdefault("singular", names.get("kind", "").lower())
    names.setdefault("listKind", names.get("kind", "") + "List")
    old_conditions = {c.get("type"): c for c in (old_status or {}).get("conditions") or []}

    def condition(ctype: str, reason: str, message: str) -> dict[str, Any]:
        prev = old_conditions.get(ctype)
        if prev and prev.get("status") == "True":
            return prev
        return {"type": ctype, "status": "True", "lastTransitionTime": now(),
                "reason": reason, "message": message}

    stored = list((old_status or {}).get("storedVersions") or [])
    for v in spec.get("versions") or []:
        if v.get("storage") and v.get("name") not in stored:
            stored.append(v["name"])
    return {
        "acceptedNames": names,
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": stored,
    }


def validate_crd_basics(crd: dict[str, Any]) -> list[Cause]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    causes: list[Cause] = []
    group = spec.get("group", "")
    if not group:
        causes.append(errors.required("spec.group"))
    if not names.get("plural"):
        causes.append(errors.required("spec.names.plural"))
    if not names.get("kind"):
        causes.append(errors.required("spec.names.kind"))
    expected = f"{names.get('plural', '')}.{group}"
    if crd["metadata"].get("name") != expected:
        causes.append(errors.invalid_value(
            "metadata.name", crd["metadata"].get("name", ""),
            "must be spec.names.plural+\".\"+spec.group"))
    versions = spec.get("versions") or []
    if not versions:
        causes.append(errors.required("spec.versions", "must have exactly one version marked as storage version"))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(errors.invalid_value(
            "spec.versions", [v.get("name") for v in versions],
            "must have exactly one version marked as storage version"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append({"reason": "FieldValueNotSupported",
                       "message": f'Unsupported value: "{spec.get("scope", "")}": supported values: "Cluster", "Namespaced"',
                       "field": "spec.scope"})
    return causes


def default_crd(crd: dict[str, Any]) -> None:
    spec = crd.setdefault("spec", {})
    names = spec.setdefault("names", {})
    if names.get("kind"):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
    spec.setdefault("conversion", {"strategy": "None"})
    for v in spec.get("versions") or []:
        v.setdefault("served", True)
        v.setdefault("storage", False)
