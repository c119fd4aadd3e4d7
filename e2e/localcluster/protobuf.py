"""Reading ``application/vnd.kubernetes.protobuf`` request bodies as JSON-shaped objects.

Typed Go clients send built-in objects in protobuf (Helm's release Secrets, ``kubectl
create namespace``/``configmap``/``secret``/``deployment``, DeleteOptions). The body is
``k8s\\x00`` followed by a ``runtime.Unknown`` envelope whose ``raw`` holds the object. The
field table (``protobuf_schema.json``) comes from the upstream ``generated.proto`` files
(see ``gen_protobuf_schema.py``). Responses stay JSON, which those clients also accept.

The wire format cannot tell an unset Go pointer from a set zero value, while Go's JSON
encoding drops zero values of ``omitempty`` fields. Zero values are therefore dropped,
except for the fields below, which are pointers whose zero means something.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import json
import struct
from pathlib import Path
from typing import Any

MAGIC = b"k8s\x00"
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."

# Pointer fields where 0/false is a real value (``replicas: 0``, ``runAsUser: 0``...).
KEEP_ZERO = frozenset({
    "replicas", "revisionHistoryLimit", "progressDeadlineSeconds", "terminationGracePeriodSeconds",
    "activeDeadlineSeconds", "runAsUser", "runAsGroup", "fsGroup", "defaultMode", "mode", "priority",
    "successfulJobsHistoryLimit", "failedJobsHistoryLimit", "backoffLimit", "completions", "parallelism",
    "ttlSecondsAfterFinished", "minReplicas", "deletionGracePeriodSeconds", "gracePeriodSeconds",
    "startingDeadlineSeconds", "expirationSeconds", "partition", "maxUnavailable", "maxSurge",
    "minAvailable", "automountServiceAccountToken", "immutable", "runAsNonRoot",
    "readOnlyRootFilesystem", "allowPrivilegeEscalation", "privileged", "optional", "orphanDependents",
    "controller", "blockOwnerDeletion", "enableServiceLinks", "shareProcessNamespace", "hostUsers",
    "suspend", "setHostnameAsFQDN", "leaseDurationSeconds", "leaseTransitions", "ready", "serving",
    "terminating", "port", "allowVolumeExpansion",
})


class ProtobufError(ValueError):
    pass


@functools.cache
def _schema() -> dict[str, Any]:
    return json.loads((Path(__file__).with_name("protobuf_schema.json")).read_text())


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(number, wire type, raw value) for every field of one message."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(data):
        value: Any
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


def _signed(value: int) -> int:
    """Negative int32 and int64 values travel as 64-bit two's complement varints."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _scalar(ftype: str, wire: int, raw: Any) -> Any:
    if ftype == "string":
        return raw.decode("utf-8")
    if ftype == "bytes":
        return base64.b64encode(raw).decode()
    if ftype == "bool":
        return bool(raw)
    if ftype in ("int32", "int64"):
        return _signed(raw)
    if ftype in ("uint32", "uint64", "fixed32", "fixed64"):
        return raw if isinstance(raw, int) else int.from_bytes(raw, "little")
    if ftype == "double":
        return struct.unpack("<d", raw)[0]
    if ftype == "float":
        return struct.unpack("<f", raw)[0]
    raise ProtobufError(f"unsupported scalar type {ftype}")


def _packed(ftype: str, raw: bytes) -> list[Any]:
    values, pos = [], 0
    while pos < len(raw):
        v, pos = _varint(raw, pos)
        values.append(_scalar(ftype, 0, v))
    return values


def _time(msg: dict[str, Any], micro: bool) -> str | None:
    seconds, nanos = msg.get("seconds", 0), msg.get("nanos", 0)
    if not seconds and not nanos:
        return None
    t = _dt.datetime.fromtimestamp(seconds, _dt.UTC) + _dt.timedelta(microseconds=nanos // 1000)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def _special(mtype: str, data: bytes, name: str) -> tuple[bool, Any]:
    """Types whose JSON form is not an object of their protobuf fields."""
    if mtype in (_META + "Time", _META + "MicroTime"):
        return True, _time(_message(mtype, data, raw_fields=True), mtype.endswith("MicroTime"))
    if mtype == "k8s.io.apimachinery.pkg.api.resource.Quantity":
        return True, _message(mtype, data, raw_fields=True).get("string")
    if mtype == "k8s.io.apimachinery.pkg.util.intstr.IntOrString":
        m = _message(mtype, data, raw_fields=True)
        if m.get("type", 0) == 1:
            return True, m.get("strVal", "")
        value = m.get("intVal", 0)
        return True, (value if value or name in KEEP_ZERO else None)
    if mtype == _META + "Duration":
        return True, f"{_message(mtype, data, raw_fields=True).get('duration', 0) / 1e9:g}s"
    if mtype in (_META + "FieldsV1", "k8s.io.apimachinery.pkg.runtime.RawExtension"):
        raw = _message(mtype, data, raw_fields=True, keep_bytes=True)
        blob = raw.get("Raw") or raw.get("raw")
        return True, (json.loads(blob) if blob else None)
    return False, None


def _empty(name: str, value: Any) -> bool:
    if value is None:
        return True
    if name in KEEP_ZERO or isinstance(value, float):
        return False
    return value in ("", 0, False, {}, [])


def _message(mtype: str, data: bytes, *, raw_fields: bool = False, keep_bytes: bool = False) -> dict[str, Any]:
    table = _schema()["messages"].get(mtype)
    if table is None:
        raise ProtobufError(f"no protobuf schema for {mtype}")
    out: dict[str, Any] = {}
    for number, wire, raw in _fields(data):
        field = table.get(str(number))
        if field is None:
            continue  # a field newer than our table: the real decoder skips unknown fields too
        name, label, ftype = field[0], field[1], field[2]
        if label == "map":
            entry = dict(_fields(raw)[i][::2] for i in range(len(_fields(raw))))
            vtype = field[3]
            key = _scalar(ftype, 2, entry.get(1, b"")) if ftype in ("string", "bytes") else _scalar(ftype, 0, entry.get(1, 0))
            val = entry.get(2, b"" if vtype in ("string", "bytes") or "." in vtype else 0)
            out.setdefault(name, {})[key] = _decode_value(vtype, 2 if isinstance(val, bytes) else 0, val, name)
            continue
        if keep_bytes and ftype == "bytes":
            value: Any = raw
        else:
            if label == "repeated" and wire == 2 and ftype not in ("string", "bytes") and "." not in ftype:
                out.setdefault(name, []).extend(_packed(ftype, raw))
                continue
            value = _decode_value(ftype, wire, raw, name)
        if label == "repeated":
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    if raw_fields:
        return out
    return {k: v for k, v in out.items() if not _empty(k, v)}


def _decode_value(ftype: str, wire: int, raw: Any, name: str) -> Any:
    if "." not in ftype:
        if (wire == 2) != (ftype in ("string", "bytes")) and ftype not in ("double", "float"):
            raise ProtobufError(f"field {name}: wire type {wire} does not carry a {ftype}")
        return _scalar(ftype, wire, raw)
    if wire != 2:
        raise ProtobufError(f"field {name}: wire type {wire} does not carry a message")
    handled, value = _special(ftype, raw, name)
    if handled:
        return value
    return _message(ftype, raw)


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded Kubernetes object (apiVersion and kind included)."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic prefix")
    envelope = _message("k8s.io.apimachinery.pkg.runtime.Unknown", body[len(MAGIC):], raw_fields=True,
                        keep_bytes=True)
    type_meta = envelope.get("typeMeta") or {}
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    key = f"{api_version}/{kind}" if api_version else kind
    if kind == "DeleteOptions":
        key = "meta/v1/DeleteOptions"
    mtype = _schema()["kinds"].get(key)
    if mtype is None:
        raise ProtobufError(f"protobuf bodies of {key or 'unknown kinds'} are not supported; send JSON")
    obj = _message(mtype, envelope.get("raw") or b"")
    return {"apiVersion": api_version, "kind": kind, **obj} if api_version else {"kind": kind, **obj}
