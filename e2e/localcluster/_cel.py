"""CEL for ``x-kubernetes-validations``, on top of cel-python (``celpy``).

cel-python implements the CEL core and its macros (``all``, ``exists``, ``exists_one``,
``map``, ``filter``, ``has``). The apiserver adds Kubernetes libraries on top; we provide the
parts of them that a CRD commonly uses, with the apiserver's semantics:

- lists: ``isSorted()``, ``sum()``, ``min()``, ``max()``, ``indexOf(x)``, ``lastIndexOf(x)``;
- quantities: ``quantity(s)``, ``isQuantity(s)``, ``isLessThan``, ``isGreaterThan``,
  ``compareTo``, ``add``, ``sub``, ``asInteger``, ``asApproximateFloat``, ``isInteger``,
  ``sign`` (``quantity(self.limits.memory).isGreaterThan(quantity('1Gi'))``);
- optionals for ``oldSelf`` under ``optionalOldSelf: true``: ``hasValue()``, ``value()``,
  ``orValue(x)``;
- strings: ``lowerAscii()``, ``upperAscii()``, ``trim()``, ``replace(a, b)``, ``split(sep)``,
  ``join(sep)`` (on a list), ``indexOf(s)``, ``lastIndexOf(s)``, ``substring(i[, j])``,
  ``charAt(i)``.

CEL has no way to iterate over list indexes. "The list is strictly increasing" is written
``self.isSorted()`` on a list with ``x-kubernetes-list-type: set`` (which rules out
duplicates), or, for a list with a small ``maxItems``, by walking literal indexes:
``[1, 2, 3].all(i, i >= size(self) || self[i - 1] < self[i])``. Both work on a real apiserver
and here; a quadratic ``self.all(x, self.exists_one(y, y == x))`` parses everywhere but
exceeds the apiserver's estimated cost budget on a list without ``maxItems``.

Property names are escaped as the apiserver does (``__dash__``, ``__dot__``, ``__slash__``,
``__underscores__``, reserved words as ``__word__``), so ``self.__dash__`` style rules match.

cel-python does no type checking. ``analyze`` makes up for the part that matters most: it
checks field selections against the schema (a typo in a rule is refused at CRD creation, as
on a real apiserver) and gives a lower bound of the apiserver's cost estimate. Other type
errors only show when a rule is evaluated (as an "evaluating rule" error).

Equality and ``in`` follow the apiserver's heterogeneous equality (``2.0 == 2``; values of
different types are unequal rather than an error). Evaluation results are memoised, since the
tree-walking interpreter takes milliseconds for a rule with a macro.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections import OrderedDict
from fractions import Fraction
from typing import Any

import celpy
from celpy import celtypes
from celpy.evaluation import CELEvalError

_RESERVED = {
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for",
    "function", "if", "import", "let", "loop", "package", "namespace", "return", "var",
}  # fmt: skip


def escape_property(name: str) -> str:
    """The CEL name of a property, as the apiserver escapes it."""
    if name in _RESERVED:
        return f"__{name}__"
    out = name.replace("__", "__underscores__")
    return out.replace(".", "__dot__").replace("-", "__dash__").replace("/", "__slash__")


class CelError(Exception):
    """A compile or evaluation error with a message in the apiserver's words."""


# -- Kubernetes library functions ----------------------------------------------------------


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"no such overload: {name}")
    return list(value)


def _is_sorted(value: Any) -> celtypes.BoolType:
    items = _list(value, "isSorted")
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(items)))


def _sum(value: Any) -> Any:
    items = _list(value, "sum")
    if not items:
        return celtypes.IntType(0)
    total = items[0]
    for item in items[1:]:
        total = total + item
    return total


def _min(value: Any) -> Any:
    items = _list(value, "min")
    if not items:
        raise ValueError("min called on empty list")
    return min(items)


def _max(value: Any) -> Any:
    items = _list(value, "max")
    if not items:
        raise ValueError("max called on empty list")
    return max(items)


def _index_of(target: Any, item: Any) -> celtypes.IntType:
    if isinstance(target, str):
        return celtypes.IntType(str(target).find(str(item)))
    items = _list(target, "indexOf")
    for i, x in enumerate(items):
        if x == item:
            return celtypes.IntType(i)
    return celtypes.IntType(-1)


def _last_index_of(target: Any, item: Any) -> celtypes.IntType:
    if isinstance(target, str):
        return celtypes.IntType(str(target).rfind(str(item)))
    items = _list(target, "lastIndexOf")
    for i in range(len(items) - 1, -1, -1):
        if items[i] == item:
            return celtypes.IntType(i)
    return celtypes.IntType(-1)


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"no such overload: {name}")
    return str(value)


def _substring(value: Any, start: Any, end: Any = None) -> celtypes.StringType:
    text = _str(value, "substring")
    stop = len(text) if end is None else int(end)
    if not 0 <= int(start) <= stop <= len(text):
        raise IndexError(f"index out of range: {int(start)}")
    return celtypes.StringType(text[int(start) : stop])


def _join(value: Any, sep: Any = "") -> celtypes.StringType:
    return celtypes.StringType(str(sep).join(str(x) for x in _list(value, "join")))


def _split(value: Any, sep: Any) -> celtypes.ListType:
    return celtypes.ListType(celtypes.StringType(p) for p in _str(value, "split").split(str(sep)))


class Optional:
    """CEL's ``optional_type`` for ``oldSelf`` under ``optionalOldSelf: true``."""

    __slots__ = ("present", "value")

    def __init__(self, value: Any = None, present: bool = False) -> None:
        self.value = value
        self.present = present


def _opt(value: Any, name: str) -> Optional:
    if not isinstance(value, Optional):
        raise TypeError(f"no such overload: {name}")
    return value


def _opt_value(value: Any) -> Any:
    opt = _opt(value, "value")
    if not opt.present:
        raise ValueError("optional.none() dereference")
    return opt.value


_NUMBERS = (celtypes.IntType, celtypes.UintType, celtypes.DoubleType)


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBERS) and not isinstance(value, celtypes.BoolType)


def _equal(a: Any, b: Any) -> Any:
    """CEL's heterogeneous equality, which the apiserver enables: numbers compare by value
    across int, uint and double (``2.0 == 2``), values of other differing types are simply
    unequal. cel-python would report "no such overload" instead."""
    if isinstance(a, CELEvalError):
        return a
    if isinstance(b, CELEvalError):
        return b
    if _is_number(a) and _is_number(b):
        if isinstance(a, celtypes.DoubleType) or isinstance(b, celtypes.DoubleType):
            return celtypes.BoolType(float(a) == float(b))
        return celtypes.BoolType(int(a) == int(b))
    if isinstance(a, list) and isinstance(b, list):
        return celtypes.BoolType(
            len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return celtypes.BoolType(a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a))
    if isinstance(a, str) and isinstance(b, str):
        return celtypes.BoolType(str(a) == str(b))
    if type(a) is not type(b):
        return celtypes.BoolType(False)
    try:
        return celtypes.BoolType(bool(a == b))
    except TypeError:
        return celtypes.BoolType(False)


def _in(item: Any, container: Any) -> Any:
    if isinstance(item, CELEvalError):
        return item
    if isinstance(container, list | dict):
        return celtypes.BoolType(any(_equal(item, x) for x in container))
    raise TypeError("no such overload: _in_")


def _not_equal(a: Any, b: Any) -> Any:
    result = _equal(a, b)
    return result if isinstance(result, CELEvalError) else celtypes.BoolType(not result)


# -- Kubernetes quantity library -------------------------------------------------------------

_QUANTITY = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)$"
)
_SUFFIX = {
    "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
    "Pi": Fraction(2**50), "Ei": Fraction(2**60), "n": Fraction(1, 10**9), "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000), "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9),
    "T": Fraction(10**12), "P": Fraction(10**15), "E": Fraction(10**18),
}  # fmt: skip


class Quantity:
    """A resource quantity (``500m``, ``4Gi``) as the ``quantity()`` CEL function returns it."""

    __slots__ = ("value",)

    def __init__(self, value: Fraction) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Quantity) and self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)


def parse_quantity(text: str) -> Fraction | None:
    m = _QUANTITY.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        return None
    number = Fraction(m.group(1))
    if m.group(2):
        return number * Fraction(10) ** int(m.group(2)[1:])
    return number * _SUFFIX.get(m.group(3) or "", Fraction(1))


def _quantity(text: Any) -> Quantity:
    value = parse_quantity(str(text))
    if value is None:
        raise ValueError("quantities must match the regular expression")
    return Quantity(value)


def _q(value: Any, name: str) -> Fraction:
    if isinstance(value, Quantity):
        return value.value
    if isinstance(value, int) and not isinstance(value, celtypes.BoolType):
        return Fraction(int(value))
    raise TypeError(f"no such overload: {name}")


def _as_integer(value: Any) -> celtypes.IntType:
    v = _q(value, "asInteger")
    if v.denominator != 1 or not -(2**63) <= v < 2**63:
        raise ValueError("cannot convert value to integer")
    return celtypes.IntType(int(v))


FUNCTIONS: dict[str, Any] = {
    "quantity": _quantity,
    "isQuantity": lambda s: celtypes.BoolType(parse_quantity(str(s)) is not None),
    "isLessThan": lambda a, b: celtypes.BoolType(_q(a, "isLessThan") < _q(b, "isLessThan")),
    "isGreaterThan": lambda a, b: celtypes.BoolType(
        _q(a, "isGreaterThan") > _q(b, "isGreaterThan")
    ),
    "compareTo": lambda a, b: celtypes.IntType(
        (_q(a, "compareTo") > _q(b, "compareTo")) - (_q(a, "compareTo") < _q(b, "compareTo"))
    ),
    "add": lambda a, b: Quantity(_q(a, "add") + _q(b, "add")),
    "sub": lambda a, b: Quantity(_q(a, "sub") - _q(b, "sub")),
    "asInteger": _as_integer,
    "asApproximateFloat": lambda a: celtypes.DoubleType(float(_q(a, "asApproximateFloat"))),
    "isInteger": lambda a: celtypes.BoolType(_q(a, "isInteger").denominator == 1),
    "sign": lambda a: celtypes.IntType((_q(a, "sign") > 0) - (_q(a, "sign") < 0)),
    "_==_": _equal,
    "_!=_": _not_equal,
    "_in_": _in,
    "hasValue": lambda o: celtypes.BoolType(_opt(o, "hasValue").present),
    "value": _opt_value,
    "orValue": lambda o, d: _opt(o, "orValue").value if _opt(o, "orValue").present else d,
    "isSorted": _is_sorted,
    "sum": _sum,
    "min": _min,
    "max": _max,
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "lowerAscii": lambda s: celtypes.StringType(_str(s, "lowerAscii").lower()),
    "upperAscii": lambda s: celtypes.StringType(_str(s, "upperAscii").upper()),
    "trim": lambda s: celtypes.StringType(_str(s, "trim").strip()),
    "replace": lambda s, a, b: celtypes.StringType(_str(s, "replace").replace(str(a), str(b))),
    "split": _split,
    "join": _join,
    "substring": _substring,
    "charAt": lambda s, i: celtypes.StringType(_str(s, "charAt")[int(i) : int(i) + 1]),
}

# -- compile and evaluate -------------------------------------------------------------------


@functools.cache
def _environment() -> celpy.Environment:
    return celpy.Environment()


@functools.lru_cache(maxsize=512)
def _parse(expr: str) -> Any:
    return _environment().compile(expr)


@functools.lru_cache(maxsize=512)
def _program(expr: str) -> Any:
    return _environment().program(_parse(expr), functions=FUNCTIONS)


def compile_tree(expr: str) -> Any:
    """The parse tree of ``expr`` (CelError if it does not parse)."""
    compile_rule(expr)
    return _parse(expr)


def compile_rule(expr: str) -> Any:
    """Compile ``expr``; raises CelError with a message like the apiserver's."""
    try:
        return _program(expr)
    except Exception as exc:  # celpy raises its own parse error types
        line = int(getattr(exc, "line", 0) or 1)
        column = int(getattr(exc, "column", 0) or 0)
        source = expr.splitlines()[line - 1] if expr.splitlines() else expr
        # cel-go's layout: position, then the source line with a dotted caret under it.
        raise CelError(
            f"compilation failed: ERROR: <input>:{line}:{column + 1}: Syntax error: "
            f"unexpected input\n | {source}\n | {'.' * column}^"
        ) from None


# -- static field checks ---------------------------------------------------------------------
#
# cel-python does not type-check, but the apiserver does, and rejects a CRD whose rule names
# a field the schema does not declare ("undefined field 'x'"). A typo in a rule would then
# pass here and fail on a real cluster; this walk catches the common cases: field selections
# rooted at self/oldSelf and at the variables of all/exists/exists_one/map/filter.

_MACROS = {"all", "exists", "exists_one", "map", "filter"}
_KNOWN_IDENTS = {
    "quantity", "isQuantity", "int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type",
    "dyn", "duration", "timestamp",
}  # fmt: skip
_UNESCAPES = {"__dash__": "-", "__dot__": ".", "__slash__": "/", "__underscores__": "__"}


def unescape_property(name: str) -> str:
    m = re.fullmatch(r"__(\w+)__", name)
    if m and m.group(1) in _RESERVED:
        return m.group(1)
    return re.sub(r"__(dash|dot|slash|underscores)__", lambda x: _UNESCAPES[x.group(0)], name)


class _Unknown:
    """A value whose type we do not track (dynamic): anything goes below it."""


_DYN = _Unknown()


def _field_of(schema: Any, name: str) -> Any:
    if not isinstance(schema, dict):
        return _DYN
    props = schema.get("properties")
    addl = schema.get("additionalProperties")
    if isinstance(addl, dict):
        return addl
    if not props or schema.get("x-kubernetes-preserve-unknown-fields") or addl is True:
        return _DYN
    real = unescape_property(name)
    if real not in props:
        return None  # undefined
    return props[real]


# The apiserver's cost model (k8s.io/apiextensions-apiserver .../cel): a request is at most
# 3 MiB, so a list without maxItems may hold (3 MiB - 2) / (smallest item + 1) items.
MAX_REQUEST_BYTES = 3 * 1024 * 1024
_MIN_SIZES = {"integer": 1, "number": 1, "boolean": 4, "string": 2, "object": 2, "array": 2}


def max_cardinality(schema: Any) -> float:
    """Most items (or entries) a list or map schema can hold, as the apiserver estimates it."""
    if not isinstance(schema, dict):
        return 1.0
    if isinstance(schema.get("items"), dict):
        if "maxItems" in schema:
            return float(schema["maxItems"])
        item = schema["items"]
    elif isinstance(schema.get("additionalProperties"), dict):
        if "maxProperties" in schema:
            return float(schema["maxProperties"])
        item = schema["additionalProperties"]
    else:
        return 1.0
    smallest = _MIN_SIZES.get(str(item.get("type")), 1)
    return float((MAX_REQUEST_BYTES - 2) // (smallest + 1))


class _ListLiteral:
    def __init__(self, size: int, item: Any = None) -> None:
        self.size = size
        self.item = item


class _Str:
    """A string (or bytes) value of at most ``size`` bytes, as the cost estimate sizes it."""

    def __init__(self, size: float) -> None:
        self.size = size


# cel-go's cost factors (common/cost.go): a string traversal costs 0.1 per byte, a regular
# expression 0.25 per character of its source.
_STRING_TRAVERSAL = 0.1
_REGEX_LENGTH = 0.25


def _string_size(value: Any) -> float | None:
    """The most bytes a string value can hold, as k8s.io/apiserver pkg/cel/common/schemas.go
    sizes it: maxLength x 4 (a character may take 4 bytes), the longest enum value, or what
    fits in a request; None for a value that is not a string."""
    if isinstance(value, _Str):
        return value.size
    if not isinstance(value, dict) or value.get("type") != "string":
        return None
    if "maxLength" in value:
        return float(value["maxLength"]) * 4
    if value.get("enum"):
        return float(max(len(str(v)) for v in value["enum"]))
    return float(MAX_REQUEST_BYTES - 2)


def _charge(size: float, factor: float) -> float:
    # cel-go rounds each factored size up (checker/cost.go multiplyByCostFactor).
    import math

    return float(math.ceil(size * factor))


_PASS_THROUGH = {
    "expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication",
    "unary", "member", "primary", "paren_expr",
}  # fmt: skip


def analyze(expr: str, schema: dict[str, Any], *, root: bool = False, old: bool = True) -> float:
    """Check the field selections of ``expr`` against ``schema`` (CelError: "undefined field")
    and return a lower bound of the cost the apiserver estimates for it.

    The bound counts one per identifier, selection, operator and call, and multiplies the body
    of all/exists/exists_one/map/filter by the size of the list or map it walks (maxItems or
    maxProperties, or what fits in a request). The functions cel-go charges by size are charged
    as it does (checker/cost.go, k8s.io/apiserver pkg/cel/library/cost.go): ``matches`` costs
    (string bytes + 1) x 0.1 x (regex length x 0.25); ``startsWith``/``endsWith`` 0.1 per byte
    of the prefix; ``contains`` the product of both; ``==``/``!=``/``<`` on strings 0.1 per
    byte of the shorter; ``bytes()``, ``lowerAscii()``, ``upperAscii()``, ``trim()`` and
    ``replace()`` 0.1 per byte; ``in`` a list its size; ``sum()`` and the other list functions
    the list's size. A string's size is its maxLength x 4, and a map key's 0 (the apiserver
    declares map keys without a size). cel-go charges at least that much, so a bound over the
    limit means a real apiserver refuses the rule too.
    """
    from lark import Tree

    tree = compile_tree(expr)
    if root:
        schema = dict(schema)
        schema["properties"] = {
            **(schema.get("properties") or {}),
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}},
            },
        }
    env: dict[str, Any] = {"self": schema, "oldSelf": schema if old else _DYN}

    def fail(token: Any, text: str) -> None:
        column = int(getattr(token, "column", 1) or 1) - 1
        raise CelError(
            f"compilation failed: ERROR: <input>:{getattr(token, 'line', 1)}:{column + 1}: {text}"
            f"\n | {expr}\n | {'.' * column}^"
        )

    def size_of(value: Any) -> float:
        if isinstance(value, _ListLiteral):
            return float(value.size)
        return max_cardinality(value)

    def string_op(method: str, base: Any, args: list[Any]) -> tuple[Any, float] | None:
        """(result, cost) of a string function cel-go charges by size, or None."""
        target = _string_size(base)
        walked = [walk(arg, scope_now[0]) for arg in args]
        arg_cost = sum(c for _, c in walked)
        sizes = [_string_size(v) for v, _ in walked]
        if method == "matches" and target is not None:
            regex = sizes[0] if sizes and sizes[0] is not None else float(MAX_REQUEST_BYTES - 2)
            cost = _charge(target + 1, _STRING_TRAVERSAL) * _charge(regex, _REGEX_LENGTH)
            return _DYN, cost + arg_cost
        if method in ("startsWith", "endsWith") and target is not None:
            return _DYN, _charge(sizes[0] or 0.0, _STRING_TRAVERSAL) + arg_cost
        if method == "contains" and target is not None:
            inner = _charge(sizes[0] or 0.0, _STRING_TRAVERSAL)
            return _DYN, _charge(target, _STRING_TRAVERSAL) * inner + arg_cost
        if method in ("lowerAscii", "upperAscii", "trim", "replace") and target is not None:
            return _Str(target), _charge(target, _STRING_TRAVERSAL) + arg_cost
        if method in ("isSorted", "sum", "min", "max", "indexOf", "lastIndexOf") and target is None:
            return _DYN, size_of(base) + arg_cost
        return None

    scope_now: list[dict[str, Any]] = [{}]

    def walk(node: Any, scope: dict[str, Any]) -> tuple[Any, float]:
        if not isinstance(node, Tree):
            return _DYN, 0.0
        kind = node.data
        kids = node.children
        if kind == "ident":
            name = str(kids[0])
            if name in scope:
                return scope[name], 1.0
            if name not in _KNOWN_IDENTS:
                fail(kids[0], f"undeclared reference to '{name}' (in container '')")
            return _DYN, 1.0
        if kind == "literal":
            text = str(kids[0]) if kids else ""
            if text[:1] in ("'", '"'):
                return _Str(float(len(text) - 2)), 0.0
            return _DYN, 0.0
        if kind == "list_lit":
            elements = kids[0].children if kids and isinstance(kids[0], Tree) else []
            walked = [walk(e, scope) for e in elements]
            sizes = [_string_size(v) for v, _ in walked]
            item = _Str(max(s or 0.0 for s in sizes)) if sizes and all(x is not None for x in sizes) else None
            return _ListLiteral(len(elements), item), sum(c for _, c in walked)
        if kind == "ident_arg" and kids and str(kids[0]) in ("bytes", "string") and len(kids) > 1:
            args = kids[1].children if isinstance(kids[1], Tree) else []
            walked = [walk(arg, scope) for arg in args]
            size = _string_size(walked[0][0]) if walked else None
            if size is not None:
                # cel-go: a conversion traverses the string; bytes may hold 4 per character.
                return _Str(size), _charge(size, _STRING_TRAVERSAL) + walked[0][1] + 1
        if kind == "relation" and len(kids) == 2 and isinstance(kids[0], Tree) and kids[0].data.startswith("relation_"):
            # `a == b` parses as relation(relation_eq(a), b).
            op = kids[0].data
            left, left_cost = walk(kids[0].children[0], scope)
            right, right_cost = walk(kids[1], scope)
            if op == "relation_in":
                return _DYN, left_cost + right_cost + size_of(right)
            sizes = [_string_size(left), _string_size(right)]
            if sizes[0] is not None and sizes[1] is not None:
                return _DYN, left_cost + right_cost + max(1.0, _charge(min(sizes[0], sizes[1]), _STRING_TRAVERSAL))
            return _DYN, left_cost + right_cost + 1
        if kind == "member_dot":
            base, cost = walk(kids[0], scope)
            if base is _DYN or isinstance(base, _ListLiteral):
                return _DYN, cost + 1
            found = _field_of(base, str(kids[1]))
            if found is None:
                fail(kids[1], f"undefined field '{unescape_property(str(kids[1]))}'")
            return found, cost + 1
        if kind == "member_index":
            base, cost = walk(kids[0], scope)
            cost += walk(kids[1], scope)[1] + 1
            if isinstance(base, dict) and isinstance(base.get("items"), dict):
                return base["items"], cost
            if isinstance(base, dict) and isinstance(base.get("additionalProperties"), dict):
                return base["additionalProperties"], cost
            return _DYN, cost
        if kind == "member_dot_arg":
            base, cost = walk(kids[0], scope)
            method = str(kids[1])
            args = kids[2].children if len(kids) > 2 and isinstance(kids[2], Tree) else []
            if method in _MACROS and len(args) >= 2:
                var = _macro_var(args[0])
                bound: Any = _DYN
                if isinstance(base, dict) and isinstance(base.get("items"), dict):
                    bound = base["items"]
                elif isinstance(base, dict) and isinstance(base.get("additionalProperties"), dict):
                    bound = _Str(0.0)  # a map's key
                elif isinstance(base, _ListLiteral) and base.item is not None:
                    bound = base.item
                inner = {**scope, var: bound} if var else scope
                body = sum(walk(arg, inner)[1] for arg in args[1:])
                cost += size_of(base) * (1 + body)
                if method == "map":
                    # The result is a list as long as what was walked.
                    return {"type": "array", "items": {}, **({"maxItems": size_of(base)})}, cost
                return (base if method == "filter" else _DYN), cost
            scope_now[0] = scope
            charged = string_op(method, base, args)
            if charged is not None:
                return charged[0], cost + charged[1]
            return _DYN, cost + 1 + sum(walk(arg, scope)[1] for arg in args)
        if len(kids) == 1 and kind in _PASS_THROUGH:
            return walk(kids[0], scope)
        total = sum(walk(kid, scope)[1] for kid in kids if isinstance(kid, Tree))
        operators = 1 if sum(isinstance(k, Tree) for k in kids) > 1 or kind == "ident_arg" else 0
        return _DYN, total + operators

    return walk(tree, env)[1]


def check_fields(
    expr: str, schema: dict[str, Any], *, root: bool = False, old: bool = True
) -> None:
    """Raise CelError if ``expr`` selects a field that ``schema`` does not declare."""
    analyze(expr, schema, root=root, old=old)


def _macro_var(node: Any) -> str | None:
    """The variable name of a macro's first argument (an expression that is a bare ident)."""
    from lark import Tree

    while isinstance(node, Tree) and len(node.children) == 1:
        if node.data == "ident":
            return str(node.children[0])
        node = node.children[0]
    return None


def mentions_old_self(expr: str) -> bool:
    """Whether a rule is a transition rule (uses ``oldSelf`` as an identifier)."""
    return re.search(r"(?<![\w.])oldSelf\b", expr) is not None


def to_cel(value: Any, schema: dict[str, Any] | None) -> Any:
    """Convert a JSON value to CEL, guided by the structural schema at that node."""
    schema = schema or {}
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        if schema.get("type") == "number":
            return celtypes.DoubleType(float(value))
        return celtypes.IntType(value)
    if isinstance(value, float):
        if schema.get("type") == "integer" and value.is_integer():
            return celtypes.IntType(int(value))
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, list):
        items = schema.get("items") if isinstance(schema.get("items"), dict) else None
        return celtypes.ListType(to_cel(v, items) for v in value)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        out = celtypes.MapType()
        for key, item in value.items():
            sub = props.get(key, addl if isinstance(addl, dict) else None)
            name = escape_property(key) if key in props else key
            out[celtypes.StringType(name)] = to_cel(item, sub)
        return out
    return value


def _describe_eval_error(exc: Any) -> str:
    args: list[Any] = list(getattr(exc, "args", ()) or ())
    text = str(args[0]) if args else str(exc)
    kind = args[1] if len(args) > 1 else None
    if kind is KeyError:
        m = re.search(r"no such member in mapping: '([^']*)'", text)
        if m:
            return f"no such key: {m.group(1)}"
        m = re.search(r"undeclared reference to '([^']*)'", text)
        if m:
            return f"undeclared reference to '{m.group(1)}'"
    if kind is IndexError:
        return "index out of bounds"
    if kind is ZeroDivisionError:
        return "division by zero"
    if "no matching overload" in text or "no such overload" in text:
        return "no such overload"
    return text


def is_bool(value: Any) -> bool:
    # celpy's BoolType and IntType both derive from int; only the former is a CEL bool.
    return isinstance(value, bool | celtypes.BoolType)


def evaluate(program: Any, activation: dict[str, Any]) -> Any:
    """Evaluate; raises CelError(message) on an evaluation error."""
    try:
        result = program.evaluate(activation)
    except CELEvalError as exc:
        raise CelError(_describe_eval_error(exc)) from None
    except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError) as exc:
        raise CelError(str(exc)) from None
    if isinstance(result, CELEvalError):
        raise CelError(_describe_eval_error(result))
    return result


# -- memoised evaluation ---------------------------------------------------------------------

NO_OLD = object()
_MEMO: OrderedDict[tuple[Any, ...], tuple[Any, Any, str | None]] = OrderedDict()
_MEMO_SIZE = 8192


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def run(
    expr: str,
    self_value: Any,
    old_value: Any,
    schema: dict[str, Any],
    owner: object,
    optional_old: bool = False,
) -> Any:
    """Evaluate ``expr`` with ``self`` (and ``oldSelf`` unless ``old_value is NO_OLD``).

    CEL is pure, and cel-python's tree-walking interpreter takes milliseconds for a rule with
    a macro, so results are memoised on the rule and the JSON of its inputs. ``owner`` is the
    schema object the conversion depends on; the memo keeps a reference to it so that its
    ``id`` cannot be reused by another schema while the entry lives.
    """
    old_key = None if old_value is NO_OLD else _canon(old_value)
    key = (expr, _canon(self_value), old_key, id(owner), optional_old)
    hit = _MEMO.get(key)
    if hit is not None and hit[0] is owner:
        _MEMO.move_to_end(key)
        if hit[2] is not None:
            raise CelError(hit[2])
        return hit[1]
    activation = {"self": to_cel(self_value, schema)}
    if optional_old:
        present = old_value is not NO_OLD
        activation["oldSelf"] = Optional(to_cel(old_value, schema) if present else None, present)
    elif old_value is not NO_OLD:
        activation["oldSelf"] = to_cel(old_value, schema)
    try:
        result, error = evaluate(compile_rule(expr), activation), None
    except CelError as exc:
        result, error = None, str(exc)
    _MEMO[key] = (owner, result, error)
    if len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)
    if error is not None:
        raise CelError(error)
    return result
