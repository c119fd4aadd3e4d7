"""Started means the operator has seen the cluster: its cache holds the initial listings.

kopf raises its ready flag once the start-up handlers have run, before any watch has listed
anything. An API server that refuses the first lists (a 503 while it restarts) would leave an
operator that claims to have started and knows nothing yet. So the "Started" line and
/readyz wait until a LIST of every watched kind, sent by the operator's own client, finds
nothing the cache lacks: then every object that existed at start is known, and the first
reconcile of each sees its children.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from tfleet.api.vocabulary import API_VERSION, KIND, LABEL_MANAGED_BY, MANAGER
from tfleet.runtime.kube import CHILD_KINDS, KubeError

log = logging.getLogger(__name__)

Manifest = dict[str, Any]

FIRST_RETRY_SECONDS = 0.2
MAX_RETRY_SECONDS = 5.0


class Lister(Protocol):
    def list_objects(self, api_version: str, kind: str, namespace: str | None,
                     label_selector: str | None = None) -> list[Manifest]: ...


def watched_kinds() -> list[tuple[str, str, str | None]]:
    """(apiVersion, kind, label selector) of everything the operator's watches list."""
    return [(API_VERSION, KIND, None),
            *((api_version, kind, f"{LABEL_MANAGED_BY}={MANAGER}") for api_version, kind in CHILD_KINDS)]


def unseen(lister: Lister, holds: Callable[[Manifest], bool], namespaces: tuple[str, ...]) -> tuple[int, int]:
    """(objects listed, objects the cache does not hold yet), over every watched kind."""
    listed = missing = 0
    for api_version, kind, selector in watched_kinds():
        for namespace in namespaces or (None,):
            for obj in lister.list_objects(api_version, kind, namespace, selector):
                listed += 1
                missing += not holds(obj)
    return listed, missing


def wait_until_seen(lister: Lister, holds: Callable[[Manifest], bool], namespaces: tuple[str, ...],
                    stop: threading.Event) -> int | None:
    """Lists until the cache holds everything listed; the number of objects listed, or None
    when `stop` was set first. API errors are waited out (a Retry-After is honoured)."""
    delay = FIRST_RETRY_SECONDS
    reported: str | None = None
    while not stop.is_set():
        try:
            listed, missing = unseen(lister, holds, namespaces)
        except KubeError as exc:
            problem = f"{exc.code} {exc.reason}".strip()
            if problem != reported:  # once per kind of trouble, not once per retry
                log.warning("Waiting for the initial listings: the API server answered %s", exc)
                reported = problem
            stop.wait(exc.retry_after if exc.retry_after is not None else delay)
            delay = min(MAX_RETRY_SECONDS, delay * 2)
            continue
        if not missing:
            return listed
        log.debug("Waiting for the watches to deliver %d of %d listed objects", missing, listed)
        stop.wait(FIRST_RETRY_SECONDS)
    return None
