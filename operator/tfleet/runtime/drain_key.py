"""The drain key: the secret every serving pod's drain token is derived from.

A serving pod's health bridge drains (takes the pod out of its Services) only for a request
that carries the pod's drain token, and the preStop hook sends it. The token of a revision
is `HMAC-SHA256(key, "<namespace>/<name>/<revision>")` (`tfleet.desired.health_wiring`). The
key lives in a Secret in the operator's own namespace; the operator reads it when it starts
leading and creates it when it is missing:

    GET ─▶ found: use it
      └─▶ 404: POST a new random key ─▶ created: use it
                                      └─▶ 409 AlreadyExists (another replica was first): GET, use that

A lost response (the POST landed, the answer did not) is retried from the GET, so every
path ends with the key that is stored. An existing Secret is never replaced: it is
created `immutable`, and a Secret without a usable key stops the operator with a message
naming it rather than being overwritten.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any, Protocol

from tfleet.api.vocabulary import LABEL_MANAGED_BY, MANAGER
from tfleet.desired.health_wiring import DRAIN_KEY_BYTES, drain_key_problem
from tfleet.runtime.kube import KubeError

log = logging.getLogger(__name__)

Manifest = dict[str, Any]

DEFAULT_SECRET_NAME = "tfleet-drain-key"
# The Secret's data key that holds the key bytes.
DATA_KEY = "key"
# Waits between attempts while the API server cannot be reached (or throttles), at most.
RETRY_CAP_SECONDS = 5.0


class SecretClient(Protocol):
    """The two calls the drain key needs (`tfleet.runtime.kube.Kube` has them)."""

    def get_secret(self, namespace: str, name: str) -> Manifest | None: ...

    def create_secret(self, secret: Manifest) -> Manifest: ...


class DrainKeyError(Exception):
    """The drain key cannot be had: a refusal a retry will not change, or an unusable Secret."""


def new_key() -> bytes:
    return secrets.token_bytes(DRAIN_KEY_BYTES)


def new_secret(namespace: str, name: str, key: bytes) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {LABEL_MANAGED_BY: MANAGER, "app.kubernetes.io/part-of": "tfleet",
                       "app.kubernetes.io/component": "drain-key"},
        },
        "type": "Opaque",
        # A key is replaced by deleting the Secret, never by editing it (see docs/operations.md).
        "immutable": True,
        "data": {DATA_KEY: base64.b64encode(key).decode()},
    }


def key_of(secret: Manifest) -> bytes:
    """The key a Secret holds; DrainKeyError naming the Secret and the rule otherwise."""
    meta = secret.get("metadata") or {}
    where = f"Secret {meta.get('namespace')}/{meta.get('name')}"
    encoded = (secret.get("data") or {}).get(DATA_KEY)
    if not isinstance(encoded, str) or not encoded:
        raise DrainKeyError(f"{where} has no data.{DATA_KEY}: delete it and the operator creates a new one")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise DrainKeyError(f"{where}: data.{DATA_KEY} is not base64") from None
    problem = drain_key_problem(key)
    if problem is not None:
        raise DrainKeyError(f"{where}: data.{DATA_KEY}: {problem}")
    return key


def ensure(client: SecretClient, namespace: str, name: str,
           make_key: Callable[[], bytes] = new_key) -> tuple[bytes, bool]:
    """The stored key, and whether this call created it. One pass of GET, POST, GET."""
    secret = client.get_secret(namespace, name)
    created = False
    if secret is None:
        try:
            secret = client.create_secret(new_secret(namespace, name, make_key()))
            created = True
        except KubeError as exc:
            if exc.code != 409:
                raise
            secret = client.get_secret(namespace, name)
            if secret is None:
                # Created by someone else and deleted again within two requests: try again later.
                raise KubeError(409, "AlreadyExists", f"Secret {namespace}/{name} came and went") from exc
    return key_of(secret), created


def load(client: SecretClient, namespace: str, name: str, stop: threading.Event,
         make_key: Callable[[], bytes] = new_key) -> bytes | None:
    """The drain key, waiting out failures that pass with time; None when `stop` is set first.

    DrainKeyError for a refusal that needs a person (Forbidden: the RBAC lacks the Secret
    grant; a Secret without a usable key).
    """
    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            key, created = ensure(client, namespace, name, make_key)
        except KubeError as exc:
            if not exc.retryable:
                raise DrainKeyError(f"cannot read or create Secret {namespace}/{name}: {exc}") from exc
            delay = min(RETRY_CAP_SECONDS, exc.retry_after or 0.25 * 2 ** attempt)
            log.warning("Failed to load the drain key from Secret %s/%s, retrying in %.1fs: %s",
                        namespace, name, delay, exc)
            stop.wait(delay)
            continue
        log.info("%s the drain key in Secret %s/%s", "Created" if created else "Loaded", namespace, name)
        return key
    return None
