"""Kubernetes ``Status`` errors with the reasons, codes and messages of the real apiserver.

Clients branch on ``reason`` and ``code`` (kopf retries on 409, client-go relists on 410,
kubectl prints ``message``), so every failure leaves the server as one of these.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A failed API call; ``status()`` is the ``meta/v1 Status`` body sent to clients."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body

    def __repr__(self) -> str:
        return f"ApiError({self.code}, {self.reason!r}, {self.message!r})"


def qualified(plural: str, group: str) -> str:
    """``deployments.apps`` for a grouped resource, ``pods`` for the core group."""
    return f"{plural}.{group}" if group else plural


def _details(name: str, group: str, kind: str, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = kind
    details.update(extra)
    return details


def not_found(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{qualified(plural, group)} "{name}" not found',
        _details(name, group, plural),
    )


def no_such_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        409, "AlreadyExists", f'{qualified(plural, group)} "{name}" already exists',
        _details(name, group, plural),
    )


def conflict(plural: str, group: str, name: str, why: str | None = None) -> ApiError:
    why = why or (
        "the object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    return ApiError(
        409, "Conflict",
        f'Operation cannot be fulfilled on {qualified(plural, group)} "{name}": {why}',
        _details(name, group, plural),
    )


def field_error_text(cause: dict[str, Any]) -> str:
    field = cause.get("field")
    return f"{field}: {cause['message']}" if field else str(cause["message"])


def invalid(kind: str, group: str, name: str, causes: list[dict[str, Any]],
            message: str | None = None) -> ApiError:
    """422 with ``details.causes``; the message aggregates causes like field.ErrorList does."""
    if message is None:
        texts = [field_error_text(c) for c in causes]
        joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
        message = f'{qualified(kind, group)} "{name}" is invalid: {joined}'
    return ApiError(422, "Invalid", message, _details(name, group, kind, causes=causes))


def required(field: str, detail: str = "") -> dict[str, Any]:
    return {
        "reason": "FieldValueRequired",
        "message": "Required value" + (f": {detail}" if detail else ""),
        "field": field,
    }


def invalid_value(field: str, value: Any, detail: str) -> dict[str, Any]:
    shown = f'"{value}"' if isinstance(value, str) else _go_repr(value)
    return {
        "reason": "FieldValueInvalid",
        "message": f"Invalid value: {shown}: {detail}",
        "field": field,
    }


def _go_repr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}":{_go_repr(v)}' for k, v in sorted(value.items())) + "}"
    return str(value)


def method_not_allowed() -> ApiError:
    return ApiError(
        405, "MethodNotAllowed",
        "the server does not allow this method on the requested resource", {},
    )


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        415, "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"application/json-patch+json, application/merge-patch+json, "
        f"application/apply-patch+yaml (got {content_type or 'none'})",
    )


def forbidden(plural: str, group: str, name: str, why: str, **details: Any) -> ApiError:
    return ApiError(
        403, "Forbidden", f'{qualified(plural, group)} "{name}" is forbidden: {why}',
        _details(name, group, plural, **details),
    )


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}")
