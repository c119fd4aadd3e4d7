"""JSON shape checks of pass-through Kubernetes objects (pod affinity).

The CRD keeps pod.affinity schemaless, and the operator writes it into the Deployment with
server-side apply. There a value of the wrong JSON type, or a field the type does not
declare, fails the typed conversion of the apply patch (structured-merge-diff: "expected
map, got ...", "field not declared in schema") with an error that is neither the object's nor
retryable. Checking the shape here names the field in `tfleet render` and in the
InferenceService's status instead. The types (`tfleet.api.affinity_types`) are generated from
the `kubernetes` client's models, themselves generated from the API's OpenAPI document; this
module imports no client, as the api layer does no I/O. Semantic rules (required fields, operator values) stay with the API server, which
refuses the Deployment with a 422 that the operator reports as InvalidSpec.
"""

from __future__ import annotations

from typing import Any

from tfleet.api.affinity_types import TYPES

_SCALARS: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "bool": (bool,), "float": (int, float),
                                         "datetime": (str,), "date": (str,), "object": (object,)}
_JSON_NAMES = {dict: "object", list: "array", str: "string", int: "integer", float: "number", bool: "boolean"}


def _json_type(value: Any) -> str:
    return "null" if value is None else _JSON_NAMES.get(type(value), type(value).__name__)


def shape_problems(value: Any, type_name: str, path: str, limit: int = 20) -> list[tuple[str, str]]:
    """(field path, message) for every place `value` does not have the JSON shape of `type_name`
    ("V1Affinity", "List[V1NodeSelectorTerm]", "Dict[str, str]", "str"), at most `limit`."""
    problems: list[tuple[str, str]] = []
    stack = [(value, type_name, path)]
    while stack and len(problems) < limit:
        node, tname, where = stack.pop()
        if node is None:
            continue  # null is "unset" for every optional field
        if tname.startswith(("List[", "list[")):
            if not isinstance(node, list):
                problems.append((where, f"must be an array, got {_json_type(node)}"))
                continue
            item = tname[5:-1]
            stack.extend((v, item, f"{where}[{i}]") for i, v in reversed(list(enumerate(node))))
        elif tname.startswith(("Dict[", "dict(")):
            if not isinstance(node, dict):
                problems.append((where, f"must be an object, got {_json_type(node)}"))
                continue
            item = tname[5:-1].split(",", 1)[1].strip()
            stack.extend((v, item, f"{where}.{k}") for k, v in node.items())
        elif tname in _SCALARS:
            kinds = _SCALARS[tname]
            if (isinstance(node, bool) and bool not in kinds and object not in kinds) or not isinstance(node, kinds):
                problems.append((where, f"must be {'an' if tname == 'int' else 'a'} {_scalar_name(tname)}, "
                                        f"got {_json_type(node)}"))
        else:
            if not isinstance(node, dict):
                problems.append((where, f"must be an object ({tname[2:]}), got {_json_type(node)}"))
                continue
            by_json = TYPES[tname]
            for key in node:
                if key not in by_json:
                    problems.append((f"{where}.{key}", f"unknown field of {tname[2:]} "
                                                       f"(known fields: {', '.join(by_json)})"))
            stack.extend((node[k], t, f"{where}.{k}") for k, t in reversed(list(by_json.items())) if k in node)
    return problems[:limit]


def _scalar_name(tname: str) -> str:
    return {"str": "string", "int": "integer", "bool": "boolean", "float": "number"}.get(tname, "string")
