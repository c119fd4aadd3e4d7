"""Server-side printing: ``meta.k8s.io/v1`` Tables and PartialObjectMetadata.

``kubectl get`` prints exactly the cells the server returns, so the columns of custom
resources come from their CRD's ``additionalPrinterColumns`` and those of built-ins from
a small set of row functions modelled on the real printers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from .objects import age, get_path
from .resources import ResourceType
from .selectors import selector_to_string

Row = list[Any]

NAME_DESC = (
    "Name must be unique within a namespace. Is required when creating resources, although some "
    "resources may allow a client to request the generation of an appropriate name automatically. "
    "Name is primarily intended for creation idempotence and configuration definition. Cannot be "
    "updated."
)
AGE_DESC = (
    "CreationTimestamp is a timestamp representing the server time when this object was created. "
    "It is not guaranteed to be set in happens-before order across separate operations. Clients "
    "may not set this value. It is represented in RFC3339 form and is in UTC."
)


def wanted_shape(accept: str) -> str | None:
    """``Table`` or ``PartialObjectMetadata`` when the client's first acceptable form is one."""
    for part in accept.split(","):
        params = dict(p.strip().split("=", 1) for p in part.split(";")[1:] if "=" in p)
        as_ = params.get("as")
        if as_ == "Table" and params.get("g") == "meta.k8s.io":
            return "Table"
        if as_ in ("PartialObjectMetadata", "PartialObjectMetadataList") and params.get("g") == "meta.k8s.io":
            return "PartialObjectMetadata"
        if not as_ and part.split(";")[0].strip() in ("application/json", "*/*", "application/yaml"):
            return None
    return None


def partial(obj: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata", {})}


def _col(name: str, ctype: str = "string", fmt: str = "", desc: str = "", priority: int = 0) -> dict[str, Any]:
    return {"name": name, "type": ctype, "format": fmt, "description": desc or name, "priority": priority}


NAME = _col("Name", "string", "name", NAME_DESC)
AGE = _col("Age", "string", "", AGE_DESC)


# --- JSONPath, the subset printer columns use --------------------------------------------------

_TOKEN = re.compile(r"""\.([A-Za-z0-9_\-/$]+)|\[(\d+|\*)\]|\[\?\(@\.([A-Za-z0-9_.\-]+)\s*(==|!=)\s*["']?([^"'\)]*)["']?\)\]|\['([^']+)'\]""")


def jsonpath(obj: Any, path: str) -> list[Any]:
    """All values at a path like ``.status.conditions[?(@.type=="Ready")].status``."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    nodes = [obj]
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if not m:
            return []
        pos = m.end()
        field, index, fkey, fop, fval, quoted = m.groups()
        out: list[Any] = []
        for node in nodes:
            if field is not None or quoted is not None:
                key = field if field is not None else quoted
                if isinstance(node, dict) and key in node:
                    out.append(node[key])
            elif index is not None:
                if isinstance(node, list):
                    if index == "*":
                        out.extend(node)
                    elif int(index) < len(node):
                        out.append(node[int(index)])
                elif isinstance(node, dict) and index == "*":
                    out.extend(node.values())
            else:
                if isinstance(node, list):
                    for item in node:
                        have = get_path(item, fkey)
                        text = json.dumps(have) if not isinstance(have, str) and have is not None else have
                        if (str(text) == fval) == (fop == "=="):
                            out.append(item)
        nodes = out
    return nodes


def _cell(ctype: str, value: Any) -> Any:
    if value is None:
        return None
    if ctype == "integer":
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if ctype == "number":
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if ctype == "boolean":
        return value if isinstance(value, bool) else None
    if ctype == "date":
        return age(value) if isinstance(value, str) else None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _custom_columns(rt: ResourceType) -> tuple[list[dict[str, Any]], Callable[[dict[str, Any]], Row]]:
    columns = rt.printer_columns()
    if not columns:
        columns = [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
    defs = [NAME] + [
        {"name": c["name"], "type": c.get("type", "string"), "format": c.get("format", ""),
         "description": c.get("description") or f"Custom resource definition column (in JSONPath format): {c.get('jsonPath', '')}",
         "priority": c.get("priority", 0)}
        for c in columns
    ]

    def row(obj: dict[str, Any]) -> Row:
        cells: Row = [obj["metadata"].get("name", "")]
        for c in columns:
            found = jsonpath(obj, c.get("jsonPath", ""))
            cells.append(_cell(c.get("type", "string"), found[0] if found else None))
        return cells

    return defs, row


# --- built-in printers --------------------------------------------------------------------------

def _pod_row(o: dict[str, Any]) -> Row:
    spec, status = o.get("spec") or {}, o.get("status") or {}
    statuses = status.get("containerStatuses") or []
    total = len(spec.get("containers") or [])
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
    reason = status.get("reason") or status.get("phase") or "Pending"
    for s in statuses:
        state = s.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state and state["terminated"].get("reason"):
            reason = state["terminated"]["reason"]
    if o["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and reason == "Pending":
            reason = "Pending"
    return [o["metadata"]["name"], f"{ready}/{total}", reason, restarts, age(o["metadata"].get("creationTimestamp")),
            status.get("podIP") or "<none>", spec.get("nodeName") or "<none>", "<none>", "<none>"]


def _containers(spec: dict[str, Any]) -> tuple[str, str]:
    containers = get_path(spec, ".template.spec.containers") or []
    return (",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers))


def _deploy_row(o: dict[str, Any]) -> Row:
    spec, status = o.get("spec") or {}, o.get("status") or {}
    names, images = _containers(spec)
    return [o["metadata"]["name"], f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            status.get("updatedReplicas", 0), status.get("availableReplicas", 0),
            age(o["metadata"].get("creationTimestamp")), names, images,
            selector_to_string(spec.get("selector"))]


def _rs_row(o: dict[str, Any]) -> Row:
    spec, status = o.get("spec") or {}, o.get("status") or {}
    names, images = _containers(spec)
    return [o["metadata"]["name"], spec.get("replicas", 0), status.get("replicas", 0),
            status.get("readyReplicas", 0), age(o["metadata"].get("creationTimestamp")), names, images,
            selector_to_string(spec.get("selector"))]


def _svc_row(o: dict[str, Any]) -> Row:
    spec = o.get("spec") or {}
    ingress = get_path(o, ".status.loadBalancer.ingress") or []
    external = ",".join(i.get("ip") or i.get("hostname", "") for i in ingress) or (
        "<pending>" if spec.get("type") == "LoadBalancer" else "<none>")
    ports = ",".join(
        f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/{p.get('protocol', 'TCP')}"
        for p in spec.get("ports") or []) or "<none>"
    sel = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items())) or "<none>"
    return [o["metadata"]["name"], spec.get("type", "ClusterIP"), spec.get("clusterIP") or "<none>", external,
            ports, age(o["metadata"].get("creationTimestamp")), sel]


def _event_row(o: dict[str, Any]) -> Row:
    inv = o.get("involvedObject") or o.get("regarding") or {}
    last = o.get("lastTimestamp") or o.get("deprecatedLastTimestamp") or o.get("eventTime") or \
        o["metadata"].get("creationTimestamp")
    first = o.get("firstTimestamp") or o.get("deprecatedFirstTimestamp") or o.get("eventTime") or last
    obj = f"{(inv.get('kind') or '').lower()}/{inv.get('name', '')}"
    source = (o.get("source") or {}).get("component") or o.get("reportingComponent") or o.get("reportingController") or ""
    return [age(last), o.get("type", ""), o.get("reason", ""), obj, inv.get("fieldPath", ""), source,
            o.get("message") or o.get("note") or "", age(first),
            o.get("count") or o.get("deprecatedCount") or 1, o["metadata"]["name"]]


def _node_row(o: dict[str, Any]) -> Row:
    ready = "Unknown"
    for c in get_path(o, ".status.conditions") or []:
        if c.get("type") == "Ready":
            ready = "Ready" if c.get("status") == "True" else "NotReady"
    if (o.get("spec") or {}).get("unschedulable"):
        ready += ",SchedulingDisabled"
    roles = sorted(k.split("/", 1)[1] for k in (o["metadata"].get("labels") or {})
                   if k.startswith("node-role.kubernetes.io/"))
    addresses = {a.get("type"): a.get("address") for a in get_path(o, ".status.addresses") or []}
    info = get_path(o, ".status.nodeInfo") or {}
    return [o["metadata"]["name"], ready, ",".join(roles) or "<none>", age(o["metadata"].get("creationTimestamp")),
            info.get("kubeletVersion", ""), addresses.get("InternalIP") or "<none>",
            addresses.get("ExternalIP") or "<none>", info.get("osImage") or "<unknown>",
            info.get("kernelVersion") or "<unknown>", info.get("containerRuntimeVersion") or "<unknown>"]


def _hpa_row(o: dict[str, Any]) -> Row:
    spec, status = o.get("spec") or {}, o.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    targets = []
    for m in spec.get("metrics") or []:
        target = get_path(m, ".resource.target") or {}
        if "averageUtilization" in target:
            targets.append(f"{get_path(m, '.resource.name')}: <unknown>/{target['averageUtilization']}%")
        else:
            targets.append("<unknown>")
    return [o["metadata"]["name"], f"{ref.get('kind', '')}/{ref.get('name', '')}", ", ".join(targets) or "<none>",
            spec.get("minReplicas", 1), spec.get("maxReplicas", 0), status.get("currentReplicas", 0),
            age(o["metadata"].get("creationTimestamp"))]


def _generic(name: str, ctype: str, fn: Callable[[dict[str, Any]], Any], priority: int = 0) -> tuple[dict[str, Any], Callable[[dict[str, Any]], Any]]:
    return _col(name, ctype, priority=priority), fn


_PRINTERS: dict[str, tuple[list[dict[str, Any]], Callable[[dict[str, Any]], Row]]] = {
    "v1/Pod": ([NAME, _col("Ready"), _col("Status"), _col("Restarts", "string"), AGE,
                _col("IP", priority=1), _col("Node", priority=1), _col("Nominated Node", priority=1),
                _col("Readiness Gates", priority=1)], _pod_row),
    "apps/v1/Deployment": ([NAME, _col("Ready"), _col("Up-to-date", "string"), _col("Available", "string"), AGE,
                            _col("Containers", priority=1), _col("Images", priority=1),
                            _col("Selector", priority=1)], _deploy_row),
    "apps/v1/ReplicaSet": ([NAME, _col("Desired", "integer"), _col("Current", "integer"), _col("Ready", "integer"),
                            AGE, _col("Containers", priority=1), _col("Images", priority=1),
                            _col("Selector", priority=1)], _rs_row),
    "v1/Service": ([NAME, _col("Type"), _col("Cluster-IP"), _col("External-IP"), _col("Port(s)"), AGE,
                    _col("Selector", priority=1)], _svc_row),
    "v1/Event": ([_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Subobject", priority=1),
                  _col("Source", priority=1), _col("Message"), _col("First Seen", priority=1),
                  _col("Count", "integer", priority=1), _col("Name", priority=1)], _event_row),
    "v1/Node": ([NAME, _col("Status"), _col("Roles"), AGE, _col("Version"), _col("Internal-IP", priority=1),
                 _col("External-IP", priority=1), _col("OS-Image", priority=1), _col("Kernel-Version", priority=1),
                 _col("Container-Runtime", priority=1)], _node_row),
    "autoscaling/v2/HorizontalPodAutoscaler": ([NAME, _col("Reference"), _col("Targets"),
                                                _col("MinPods", "integer"), _col("MaxPods", "integer"),
                                                _col("Replicas", "integer"), AGE], _hpa_row),
}
_PRINTERS["events.k8s.io/v1/Event"] = _PRINTERS["v1/Event"]


def _simple(extra: list[tuple[str, str, Callable[[dict[str, Any]], Any]]]) -> tuple[list[dict[str, Any]], Callable[[dict[str, Any]], Row]]:
    defs = [NAME] + [_col(n, t) for n, t, _ in extra] + [AGE]

    def row(o: dict[str, Any]) -> Row:
        return [o["metadata"]["name"]] + [fn(o) for _, _, fn in extra] + [age(o["metadata"].get("creationTimestamp"))]

    return defs, row


_PRINTERS.update({
    "v1/Namespace": _simple([("Status", "string", lambda o: get_path(o, ".status.phase") or "Active")]),
    "v1/ConfigMap": _simple([("Data", "integer", lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {}))]),
    "v1/Secret": _simple([("Type", "string", lambda o: o.get("type", "Opaque")),
                          ("Data", "integer", lambda o: len(o.get("data") or {}))]),
    "v1/ServiceAccount": _simple([]),
    "v1/Endpoints": _simple([("Endpoints", "string", lambda o: ",".join(
        f"{a.get('ip')}:{p.get('port')}" for s in o.get("subsets") or [] for a in s.get("addresses") or []
        for p in s.get("ports") or [{}]) or "<none>")]),
    "discovery.k8s.io/v1/EndpointSlice": _simple([
        ("AddressType", "string", lambda o: o.get("addressType", "")),
        ("Ports", "string", lambda o: ",".join(str(p.get("port")) for p in o.get("ports") or []) or "<unset>"),
        ("Endpoints", "string", lambda o: ",".join(a for e in o.get("endpoints") or []
                                                    for a in e.get("addresses") or []) or "<unset>")]),
    "policy/v1/PodDisruptionBudget": _simple([
        ("Min Available", "string", lambda o: str(get_path(o, ".spec.minAvailable") if get_path(o, ".spec.minAvailable") is not None else "N/A")),
        ("Max Unavailable", "string", lambda o: str(get_path(o, ".spec.maxUnavailable") if get_path(o, ".spec.maxUnavailable") is not None else "N/A")),
        ("Allowed Disruptions", "integer", lambda o: get_path(o, ".status.disruptionsAllowed") or 0)]),
    "coordination.k8s.io/v1/Lease": _simple([("Holder", "string", lambda o: get_path(o, ".spec.holderIdentity") or "")]),
    "apps/v1/StatefulSet": _simple([("Ready", "string", lambda o: f"{get_path(o, '.status.readyReplicas') or 0}/{get_path(o, '.spec.replicas') or 0}")]),
})

_CREATED_AT = _col("Created At", "date", "", AGE_DESC)


def _default_printer() -> tuple[list[dict[str, Any]], Callable[[dict[str, Any]], Row]]:
    def row(o: dict[str, Any]) -> Row:
        return [o["metadata"]["name"], o["metadata"].get("creationTimestamp")]

    return [NAME, _CREATED_AT], row


def table(rt: ResourceType, objs: list[dict[str, Any]], *, include_object: str | None = None,
          resource_version: str = "") -> dict[str, Any]:
    if rt.crd is not None:
        columns, row = _custom_columns(rt)
    else:
        columns, row = _PRINTERS.get(rt.gvk) or _default_printer()
    rows = []
    for obj in objs:
        entry: dict[str, Any] = {"cells": row(obj)}
        if include_object == "Object":
            entry["object"] = obj
        elif include_object != "None":
            entry["object"] = partial(obj)
        rows.append(entry)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    }
