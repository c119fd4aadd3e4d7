"""The API reference (docs/api-reference.md), generated from the CRD schema.

`make manifests` writes it; a test regenerates it and fails on drift, so the reference
always says what the API server enforces.
"""

from __future__ import annotations

import json
from typing import Any

from tfleet.api.crd import build_crd, build_defaults_crd
from tfleet.api.vocabulary import API_VERSION, DEFAULTS_KIND, DEFAULTS_NAME, KIND


def _type(schema: dict[str, Any]) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "int or string"
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return "object (passed through)"
    kind = schema.get("type", "")
    if kind == "array":
        return f"[]{_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        return f"map[string]{_type(schema['additionalProperties'])}"
    return str(kind)


def _constraints(schema: dict[str, Any]) -> str:
    parts = []
    for key, label in (("minimum", "min"), ("maximum", "max"), ("minLength", "min length"),
                       ("maxLength", "max length"), ("maxItems", "max items"), ("maxProperties", "max entries"),
                       ("pattern", "pattern")):
        if key in schema:
            value = f"`{schema[key]}`" if key == "pattern" else str(schema[key])
            parts.append(f"{label} {value}")
    values = schema.get("additionalProperties")
    if isinstance(values, dict) and "maxLength" in values:
        parts.append(f"values max length {values['maxLength']}")
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    for rule in schema.get("x-kubernetes-validations", []):
        parts.append(f"rule: {rule['message']}")
    return "; ".join(parts)


def _section(path: str, schema: dict[str, Any], out: list[str]) -> None:
    props = schema.get("properties") or {}
    if not props:
        return
    required = set(schema.get("required") or [])
    out.append(f"### `{path}`\n")
    if schema.get("description"):
        out.append(schema["description"] + "\n")
    out.append("| field | type | default | description |")
    out.append("| --- | --- | --- | --- |")
    nested = []
    for name, prop in props.items():
        default = f"`{json.dumps(prop['default'])}`" if "default" in prop else ("required" if name in required else "")
        description = prop.get("description", "").replace("|", "\\|")
        constraints = _constraints(prop)
        if constraints:
            description += f" ({constraints})"
        out.append(f"| `{name}` | {_type(prop)} | {default} | {description} |")
        child = prop.get("items", prop) if prop.get("type") == "array" else prop
        if child.get("properties"):
            nested.append((f"{path}.{name}" + ("[]" if prop.get("type") == "array" else ""), child))
    out.append("")
    for child_path, child in nested:
        _section(child_path, child, out)


def api_reference() -> str:
    version = build_crd()["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    out = [
        f"# {KIND} API reference ({API_VERSION})",
        "",
        "Generated from the CRD by `make manifests`; do not edit. `kubectl explain tfis.<field>` "
        "shows the same descriptions.",
        "",
        schema["description"],
        "",
        "## Where the rules are checked",
        "",
        "Every constraint and rule below is part of the CRD, so the API server refuses an object "
        "that breaks one at `kubectl apply` (or a GitOps sync), naming the field; `tfleet render` "
        "and the operator check the same rules. On the whole object:",
        "",
        *(f"- rule: {rule['message']}" for rule in schema.get("x-kubernetes-validations", [])),
        *(f"- `spec{rule.get('fieldPath', '')}`, rule: {rule['message']}"
          for rule in schema["properties"]["spec"].get("x-kubernetes-validations", [])),
        "",
        "Checked by the operator (and `tfleet render`) only, reported as `Ready=False` with reason "
        "`InvalidSpec`:",
        "",
        "- `spec.pod.affinity`: its fields and their JSON types must be those of the Kubernetes "
        "`Affinity` type, and it may nest at most 32 levels. The CRD keeps it schemaless (it is "
        "passed through to the pods), and CEL cannot see fields a schema does not declare, so no "
        "CRD rule can check it.",
        "- An object stored before a rule existed (under an older CRD) stays stored; the operator "
        "reports it, and a change to the field must satisfy the rule.",
        "",
        "Limits on list and map sizes (max items, max entries) keep the API server's estimated CEL "
        "cost within its budget.",
        "",
        "## spec",
        "",
    ]
    _section("spec", schema["properties"]["spec"], out)
    out += ["## status", ""]
    _section("status", schema["properties"]["status"], out)
    out += _defaults_reference()
    return "\n".join(out).rstrip() + "\n"


def _defaults_reference() -> list[str]:
    schema = build_defaults_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    out = [
        f"# {DEFAULTS_KIND} API reference ({API_VERSION})",
        "",
        f"Cluster-scoped, one object named `{DEFAULTS_NAME}` (`kubectl explain "
        f"inferenceservicedefaults.spec`). How each field combines with an InferenceService's own is "
        "in the README, \"Cluster defaults for platform teams\".",
        "",
        schema["description"],
        "",
        "Every rule below is part of the CRD, so the API server refuses a bad object at `kubectl apply`. "
        "One stored before a rule existed is refused by the operator: `Ready=False` with reason "
        "`InvalidDefaults`, a message naming each field, and the last accepted generation stays in force. "
        "On the whole object:",
        "",
        *(f"- rule: {rule['message']}" for rule in schema.get("x-kubernetes-validations", [])),
        "",
        "## spec",
        "",
    ]
    _section("spec", schema["properties"]["spec"], out)
    out += ["## status", ""]
    _section("status", schema["properties"]["status"], out)
    return out
