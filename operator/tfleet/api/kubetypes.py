"""JSON shape checks of pass-through Kubernetes objects (pod affinity) against the official
client's models.

The CRD keeps pod.affinity schemaless, and the operator writes it into the Deployment with
server-side apply. There a value of the wrong JSON type, or a field the type does not
declare, fails the typed conversion of the apply patch (structured-merge-diff: "expected
map, got ...", "field not declared in schema") with an error that is neither the object's nor
retryable. Checking the shape here names the field in `tfleet render` and in the
InferenceService's status instead. The types come from the `kubernetes` client's generated
models (`openapi_types` and `attribute_map`), which are generated from the API's OpenAPI
document. Semantic rules (required fields, operator values) stay with the API server, which
refuses the Deployment with a 422 that the operator reports as InvalidSpec.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

_SCALARS: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "bool": (bool,), "float": (int, float),
                                         "datetime": (str,), "date": (str,), "object": (object,)}
_JSON_NAMES = {dict: "object", list: "array", str: "string", int: "integer", float: "number", bool: "boolean"}


def _model(name: str) -> type:
    module = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    # V1NodeSelectorTerm -> kubernetes.client.models.v1_node_selector_term
    module = re.sub(r"^v(\d+)_(alpha|beta)_?(\d+)", r"v\1\2\3", module)
    return getattr(importlib.import_module(f"kubernetes.client.models.{module}"), name)  # type: ignore[no-any-return]


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
            model = _model(tname)
            if not isinstance(node, dict):
                problems.append((where, f"must be an object ({tname[2:]}), got {_json_type(node)}"))
                continue
            by_json = {json_name: model.openapi_types[attr] for attr, json_name in model.attribute_map.items()}
            for key in node:
                if key not in by_json:
                    problems.append((f"{where}.{key}", f"unknown field of {tname[2:]} "
                                                       f"(known fields: {', '.join(by_json)})"))
            stack.extend((node[k], t, f"{where}.{k}") for k, t in reversed(list(by_json.items())) if k in node)
    return problems


def _scalar_name(tname: str) -> str:
    return {"str": "string", "int": "integer", "bool": "boolean", "float": "number"}.get(tname, "string")
