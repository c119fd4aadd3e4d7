"""Validation of built-in objects: the rules an operator's generated objects trip over.

Only a subset of the real apiserver's validation, chosen for the mistakes that otherwise
show up first in production: label syntax, port names longer than 15 characters, volume
mounts of undeclared volumes, requests above limits, Services with unnamed ports, PDBs with
both bounds. Messages and field paths follow the real ones, so a test can assert on them.
"""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal, InvalidOperation
from typing import Any

Cause = dict[str, Any]

_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_IANA_SVC_NAME = re.compile(r"[-a-z0-9]+")
_ENV_NAME = re.compile(r"[ -<>-~]+")  # printable ASCII but "="
_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")

QUALIFIED_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  "
    "or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def invalid(field: str, value: Any, detail: str) -> Cause:
    return {"reason": "FieldValueInvalid", "message": f"Invalid value: {_show(value)}: {detail}", "field": field}


def required(field: str, detail: str = "") -> Cause:
    return {"reason": "FieldValueRequired", "message": "Required value" + (f": {detail}" if detail else ""),
            "field": field}


def duplicate(field: str, value: Any) -> Cause:
    return {"reason": "FieldValueDuplicate", "message": f"Duplicate value: {_show(value)}", "field": field}


def not_found(field: str, value: Any) -> Cause:
    return {"reason": "FieldValueNotFound", "message": f"Not found: {_show(value)}", "field": field}


def not_supported(field: str, value: Any, supported: list[str]) -> Cause:
    allowed = ", ".join(f'"{s}"' for s in supported)
    return {"reason": "FieldValueNotSupported",
            "message": f"Unsupported value: {_show(value)}: supported values: {allowed}", "field": field}


def forbidden(field: str, detail: str) -> Cause:
    return {"reason": "FieldValueForbidden", "message": f"Forbidden: {detail}", "field": field}


# --- names -----------------------------------------------------------------------------------

def qualified_name_problems(key: str) -> list[str]:
    """Problems of a label or annotation key (``prefix/name``), in the real wording."""
    parts = key.split("/")
    if len(parts) > 2:
        return ["a qualified name " + QUALIFIED_NAME_MSG.replace("name part ", "", 1).replace(
            "(e.g. 'MyName',  or 'my.name',  or '123-abc',", "with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName',")]
    problems = []
    name = parts[-1]
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > 63:
        problems.append("name part must be no more than 63 characters")
    elif not _QUALIFIED_NAME.fullmatch(name):
        problems.append(QUALIFIED_NAME_MSG)
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            problems.append("prefix part must be non-empty")
        elif len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix):
            problems.append(
                "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character (e.g. "
                "'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]"
                "([-a-z0-9]*[a-z0-9])?)*')")
    return problems


def validate_object_meta(meta: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    for key, value in (meta.get("labels") or {}).items():
        for problem in qualified_name_problems(key):
            causes.append(invalid("metadata.labels", key, problem))
        if not isinstance(value, str):
            causes.append(invalid(f"metadata.labels[{key}]", value, "label values must be strings"))
        elif len(value) > 63:
            causes.append(invalid("metadata.labels", value, "must be no more than 63 characters"))
        elif not _LABEL_VALUE.fullmatch(value):
            causes.append(invalid("metadata.labels", value, LABEL_VALUE_MSG))
    annotations = meta.get("annotations") or {}
    for key in annotations:
        for problem in qualified_name_problems(key):
            causes.append(invalid("metadata.annotations", key, problem))
    total = sum(len(k) + len(str(v)) for k, v in annotations.items())
    if total > 256 * 1024:
        causes.append({"reason": "FieldValueTooLong",
                       "message": "Too long: must have at most 262144 bytes", "field": "metadata.annotations"})
    for i, ref in enumerate(meta.get("ownerReferences") or []):
        for part in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(part):
                causes.append(invalid(f"metadata.ownerReferences[{i}].{part}", ref.get(part, ""),
                                      f"{part} must not be empty"))
    controllers = [r for r in meta.get("ownerReferences") or [] if r.get("controller")]
    if len(controllers) > 1:
        causes.append(invalid("metadata.ownerReferences", controllers,
                              "Only one reference can have Controller set to true"))
    return causes


def validate_label_map(labels: dict[str, Any], field: str) -> list[Cause]:
    causes = []
    for key, value in (labels or {}).items():
        for problem in qualified_name_problems(key):
            causes.append(invalid(field, key, problem))
        if isinstance(value, str) and (len(value) > 63 or not _LABEL_VALUE.fullmatch(value)):
            causes.append(invalid(field, value, "must be no more than 63 characters" if len(value) > 63
                                  else LABEL_VALUE_MSG))
    return causes


def port_name_problems(name: str) -> str | None:
    """IANA_SVC_NAME rules, which container port names must follow."""
    if len(name) > 15:
        return "must be no more than 15 characters"
    if not _IANA_SVC_NAME.fullmatch(name):
        return "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
    if "--" in name:
        return "must not contain consecutive hyphens"
    if not re.search(r"[a-z]", name):
        return "must contain at least one letter (a-z)"
    if name.startswith("-") or name.endswith("-"):
        return "must not begin or end with a hyphen"
    return None


# --- quantities ------------------------------------------------------------------------------

_SUFFIXES = {
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60, "n": Decimal("1e-9"), "u": Decimal("1e-6"),
    "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"),
    "T": Decimal("1e12"), "P": Decimal("1e15"), "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")


def parse_quantity(value: Any) -> Decimal | None:
    """A resource quantity (``500m``, ``2Gi``, ``1e3``, ``4``) as a number, None if malformed."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    m = _QUANTITY.match(value.strip())
    if not m:
        return None
    try:
        number = Decimal(m.group(1))
    except InvalidOperation:
        return None
    suffix = m.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return number * (Decimal(10) ** int(suffix[1:]))
    return number * _SUFFIXES[suffix]


# --- pod specs -------------------------------------------------------------------------------

def validate_pod_spec(spec: dict[str, Any], path: str, *, template: bool = False) -> list[Cause]:
    causes: list[Cause] = []
    volumes = spec.get("volumes") or []
    volume_names: set[str] = set()
    for i, vol in enumerate(volumes):
        name = vol.get("name", "")
        if not name:
            causes.append(required(f"{path}.volumes[{i}].name"))
        elif not _DNS1123_LABEL.fullmatch(name) or len(name) > 63:
            causes.append(invalid(f"{path}.volumes[{i}].name", name, DNS1123_LABEL_MSG))
        elif name in volume_names:
            causes.append(duplicate(f"{path}.volumes[{i}].name", name))
        volume_names.add(name)
    containers = spec.get("containers") or []
    if not containers:
        causes.append(required(f"{path}.containers"))
    names: set[str] = set()
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            causes.extend(_validate_container(c, f"{path}.{kind}[{i}]", names, volume_names))
    policy = spec.get("restartPolicy")
    if template and policy not in (None, "Always"):
        causes.append(not_supported(f"{path}.restartPolicy", policy, ["Always"]))
    grace = spec.get("terminationGracePeriodSeconds")
    if isinstance(grace, int) and grace < 0:
        causes.append(invalid(f"{path}.terminationGracePeriodSeconds", grace, "must be greater than or equal to 0"))
    causes.extend(validate_label_map(spec.get("nodeSelector") or {}, f"{path}.nodeSelector"))
    for i, tol in enumerate(spec.get("tolerations") or []):
        if tol.get("operator") == "Exists" and tol.get("value"):
            causes.append(invalid(f"{path}.tolerations[{i}].operator", tol.get("value"),
                                  "value must be empty when `operator` is 'Exists'"))
        if tol.get("operator") not in (None, "Exists", "Equal"):
            causes.append(not_supported(f"{path}.tolerations[{i}].operator", tol.get("operator"),
                                        ["Equal", "Exists"]))
        if tol.get("effect") not in (None, "", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            causes.append(not_supported(f"{path}.tolerations[{i}].effect", tol.get("effect"),
                                        ["NoExecute", "NoSchedule", "PreferNoSchedule"]))
    return causes


def _validate_container(c: dict[str, Any], path: str, names: set[str], volumes: set[str]) -> list[Cause]:
    causes: list[Cause] = []
    name = c.get("name", "")
    if not name:
        causes.append(required(f"{path}.name"))
    elif not _DNS1123_LABEL.fullmatch(name) or len(name) > 63:
        causes.append(invalid(f"{path}.name", name, DNS1123_LABEL_MSG))
    elif name in names:
        causes.append(duplicate(f"{path}.name", name))
    names.add(name)
    if not c.get("image"):
        causes.append(required(f"{path}.image"))
    port_names: set[str] = set()
    for i, port in enumerate(c.get("ports") or []):
        number = port.get("containerPort")
        if not isinstance(number, int) or not 1 <= number <= 65535:
            causes.append(invalid(f"{path}.ports[{i}].containerPort", number,
                                  "must be between 1 and 65535, inclusive"))
        pname = port.get("name")
        if pname:
            problem = port_name_problems(pname)
            if problem:
                causes.append(invalid(f"{path}.ports[{i}].name", pname, problem))
            elif pname in port_names:
                causes.append(duplicate(f"{path}.ports[{i}].name", pname))
            port_names.add(pname)
    for i, env in enumerate(c.get("env") or []):
        ename = env.get("name", "")
        if not ename:
            causes.append(required(f"{path}.env[{i}].name"))
        elif not _ENV_NAME.fullmatch(ename):
            # Since 1.34 (relaxed environment variable names) anything printable but '=' goes.
            causes.append(invalid(f"{path}.env[{i}].name", ename,
                                  "a valid environment variable name must consist only of printable "
                                  "ASCII characters other than '='"))
    mount_paths: set[str] = set()
    for i, mount in enumerate(c.get("volumeMounts") or []):
        mname = mount.get("name", "")
        if not mname:
            causes.append(required(f"{path}.volumeMounts[{i}].name"))
        elif mname not in volumes:
            causes.append(not_found(f"{path}.volumeMounts[{i}].name", mname))
        mpath = mount.get("mountPath", "")
        if not mpath:
            causes.append(required(f"{path}.volumeMounts[{i}].mountPath"))
        elif mpath in mount_paths:
            causes.append(invalid(f"{path}.volumeMounts[{i}].mountPath", mpath, "must be unique"))
        mount_paths.add(mpath)
    resources = c.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for kind_name, values in (("requests", requests), ("limits", limits)):
        for res, qty in values.items():
            if parse_quantity(qty) is None:
                causes.append(invalid(f"{path}.resources.{kind_name}[{res}]", qty,
                                      "must match the regex ^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"))
    for res, qty in requests.items():
        req, lim = parse_quantity(qty), parse_quantity(limits.get(res)) if res in limits else None
        if req is not None and lim is not None and req > lim:
            causes.append(invalid(f"{path}.resources.requests", qty,
                                  f"must be less than or equal to {res} limit of {limits[res]}"))
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = c.get(probe_name)
        if isinstance(probe, dict):
            handlers = [h for h in ("exec", "httpGet", "tcpSocket", "grpc") if probe.get(h) is not None]
            if len(handlers) != 1:
                causes.append(required(f"{path}.{probe_name}", "must specify a handler type") if not handlers
                              else forbidden(f"{path}.{probe_name}.{handlers[1]}",
                                             "may not specify more than 1 handler type"))
            if probe_name in ("livenessProbe", "startupProbe") and probe.get("successThreshold", 1) != 1:
                causes.append(invalid(f"{path}.{probe_name}.successThreshold", probe.get("successThreshold"),
                                      "must be 1"))
    return causes


# --- kinds -----------------------------------------------------------------------------------

def validate_service(spec: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    ports = spec.get("ports") or []
    seen_names: set[str] = set()
    seen_ports: set[tuple[Any, Any]] = set()
    for i, port in enumerate(ports):
        name = port.get("name", "")
        if len(ports) > 1 and not name:
            causes.append(required(f"spec.ports[{i}].name"))
        elif name and (not _DNS1123_LABEL.fullmatch(name) or len(name) > 63):
            causes.append(invalid(f"spec.ports[{i}].name", name, DNS1123_LABEL_MSG))
        elif name in seen_names:
            causes.append(duplicate(f"spec.ports[{i}].name", name))
        if name:
            seen_names.add(name)
        number = port.get("port")
        if not isinstance(number, int) or not 1 <= number <= 65535:
            causes.append(invalid(f"spec.ports[{i}].port", number, "must be between 1 and 65535, inclusive"))
        key = (number, port.get("protocol", "TCP"))
        if key in seen_ports:
            causes.append(duplicate(f"spec.ports[{i}]", {"port": number, "protocol": key[1]}))
        seen_ports.add(key)
        target = port.get("targetPort")
        target_problem = port_name_problems(target) if isinstance(target, str) else None
        if target_problem:
            causes.append(invalid(f"spec.ports[{i}].targetPort", target, target_problem))
        elif isinstance(target, int) and not 1 <= target <= 65535:
            causes.append(invalid(f"spec.ports[{i}].targetPort", target, "must be between 1 and 65535, inclusive"))
    stype = spec.get("type", "ClusterIP")
    if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        causes.append(not_supported("spec.type", stype, ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]))
    if spec.get("clusterIP") == "None" and stype != "ClusterIP":
        causes.append(invalid("spec.clusterIPs[0]", "None", "may not be set to 'None' for LoadBalancer services"
                              if stype == "LoadBalancer" else "may not be set to 'None' for NodePort services"))
    causes.extend(validate_label_map(spec.get("selector") or {}, "spec.selector"))
    return causes


def validate_config_keys(obj: dict[str, Any]) -> list[Cause]:
    causes = []
    total = 0
    for field in ("data", "binaryData"):
        for key, value in (obj.get(field) or {}).items():
            total += len(str(value))
            if len(key) > 253 or not _CONFIG_KEY.fullmatch(key):
                causes.append(invalid(f"{field}[{key}]", key,
                                      "a valid config key must consist of alphanumeric characters, '-', '_' or "
                                      "'.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for "
                                      "validation is '[-._a-zA-Z0-9]+')"))
    if total > 1024 * 1024:
        causes.append({"reason": "FieldValueTooLong", "message": "Too long: must have at most 1048576 bytes",
                       "field": "data"})
    return causes


def validate_pdb(spec: dict[str, Any]) -> list[Cause]:
    if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
        return [invalid("spec", spec, "minAvailable and maxUnavailable cannot be both set")]
    return []


def validate_hpa(spec: dict[str, Any]) -> list[Cause]:
    causes = []
    ref = spec.get("scaleTargetRef") or {}
    for part in ("kind", "name"):
        if not ref.get(part):
            causes.append(required(f"spec.scaleTargetRef.{part}"))
    low, high = spec.get("minReplicas", 1), spec.get("maxReplicas")
    if not isinstance(high, int) or high < 1:
        causes.append(invalid("spec.maxReplicas", high, "must be greater than 0"))
    elif isinstance(low, int) and high < low:
        causes.append(invalid("spec.maxReplicas", high, "must be greater than or equal to `minReplicas`"))
    if isinstance(low, int) and low < 1:
        causes.append(invalid("spec.minReplicas", low, "must be greater than or equal to 1"))
    return causes


# --- label selectors -------------------------------------------------------------------------

def validate_label_selector(selector: Any, path: str) -> list[Cause]:
    """A metav1.LabelSelector (apimachinery pkg/apis/meta/v1/validation: ValidateLabelSelector)."""
    if not isinstance(selector, dict):
        return []
    causes = validate_label_map(selector.get("matchLabels") or {}, f"{path}.matchLabels")
    for i, requirement in enumerate(selector.get("matchExpressions") or []):
        here = f"{path}.matchExpressions[{i}]"
        operator, values = requirement.get("operator"), requirement.get("values") or []
        if operator in ("In", "NotIn"):
            if not values:
                causes.append(required(f"{here}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                causes.append(forbidden(f"{here}.values",
                                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
        else:
            causes.append(invalid(f"{here}.operator", operator or "", "not a valid selector operator"))
        for problem in qualified_name_problems(str(requirement.get("key", ""))):
            causes.append(invalid(f"{here}.key", requirement.get("key", ""), problem))
    return causes


# --- network policies ------------------------------------------------------------------------
# pkg/apis/networking/validation/validation.go: ValidateNetworkPolicySpec and the functions it
# calls, with the messages it gives.

PORT_NUM_MSG = "must be between 1 and 65535, inclusive"


def _network_policy_port(port: dict[str, Any], path: str) -> list[Cause]:
    causes: list[Cause] = []
    protocol = port.get("protocol")
    if protocol is not None and protocol not in ("TCP", "UDP", "SCTP"):
        causes.append(not_supported(f"{path}.protocol", protocol, ["TCP", "UDP", "SCTP"]))
    number, end = port.get("port"), port.get("endPort")
    if number is None:
        if end is not None:
            causes.append(invalid(f"{path}.endPort", end, "may not be specified when `port` is not specified"))
    elif isinstance(number, int) and not isinstance(number, bool):
        if not 1 <= number <= 65535:
            causes.append(invalid(f"{path}.port", number, PORT_NUM_MSG))
        if end is not None:
            if end < number:
                causes.append(invalid(f"{path}.endPort", end, "must be greater than or equal to `port`"))
            if not 1 <= end <= 65535:
                causes.append(invalid(f"{path}.endPort", end, PORT_NUM_MSG))
    else:
        if end is not None:
            causes.append(invalid(f"{path}.endPort", end, "may not be specified when `port` is non-numeric"))
        problem = port_name_problems(str(number))
        if problem is not None:
            causes.append(invalid(f"{path}.port", number, problem))
    return causes


def _cidr_problem(value: str) -> str | None:
    """k8s.io/apimachinery pkg/util/validation/ip.go parseCIDR, with strict validation (the
    default since 1.33); leading zeros, which Go's sloppy parser reads, count as unparsable."""
    try:
        if "/" not in value:
            raise ValueError(value)
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        return "must not have bits set beyond the prefix length"
    return None


def _network_policy_peer(peer: dict[str, Any], path: str) -> list[Cause]:
    causes: list[Cause] = []
    peers = 0
    for key in ("podSelector", "namespaceSelector"):
        if peer.get(key) is not None:
            peers += 1
            causes.extend(validate_label_selector(peer[key], f"{path}.{key}"))
    block = peer.get("ipBlock")
    if block is not None:
        peers += 1
        cidr = block.get("cidr") or ""
        if not cidr:
            causes.append(required(f"{path}.ipBlock.cidr"))
        else:
            problem = _cidr_problem(cidr)
            if problem is not None:
                causes.append(invalid(f"{path}.ipBlock.cidr", cidr, problem))
            else:
                outer = ipaddress.ip_network(cidr, strict=False)
                for i, text in enumerate(block.get("except") or []):
                    here = f"{path}.ipBlock.except[{i}]"
                    problem = _cidr_problem(text)
                    if problem is not None:
                        causes.append(invalid(here, text, problem))
                        continue
                    inner = ipaddress.ip_network(text, strict=False)
                    if inner.version != outer.version or inner.prefixlen <= outer.prefixlen or \
                            inner.network_address not in outer:
                        causes.append(invalid(here, text, "must be a strict subset of `cidr`"))
    if peers == 0:
        causes.append(required(path, "must specify a peer"))
    elif peers > 1 and block is not None:
        causes.append(forbidden(path, "may not specify both ipBlock and another peer"))
    return causes


def validate_network_policy(spec: dict[str, Any]) -> list[Cause]:
    causes = validate_label_selector(spec.get("podSelector") or {}, "spec.podSelector")
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(direction) or []):
            here = f"spec.{direction}[{i}]"
            for j, port in enumerate(rule.get("ports") or []):
                causes.extend(_network_policy_port(port, f"{here}.ports[{j}]"))
            for j, peer in enumerate(rule.get(peers_key) or []):
                causes.extend(_network_policy_peer(peer, f"{here}.{peers_key}[{j}]"))
    types = spec.get("policyTypes") or []
    if len(types) > 2:
        causes.append(invalid("spec.policyTypes", types, "may not specify more than two policyTypes"))
        return causes
    for i, type_ in enumerate(types):
        if type_ not in ("Ingress", "Egress"):
            causes.append(not_supported(f"spec.policyTypes[{i}]", type_, ["Ingress", "Egress"]))
    return causes
