"""Started means the operator has seen the cluster: its cache holds the initial listings.

kopf raises its ready flag once the start-up handlers have run, before any watch has listed
anything, and an API server that refuses the first lists (a 503 while it restarts) would
leave an operator that claims to have started and knows nothing yet. So the work queue, the
"Started" line and /readyz wait until every watch the operator runs (`watched_kinds`, one
per namespace it serves) has delivered a complete LIST into the cache: then every object
that existed at start is known, and the first reconcile of each sees its children. A watch
whose LIST fails keeps trying (`tfleet.runtime.watch`); until it succeeds, nothing starts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

from tfleet.api.vocabulary import API_VERSION, DEFAULTS_KIND, KIND, LABEL_MANAGED_BY, MANAGER
from tfleet.runtime.kube import CHILD_KINDS

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
# How long the wait goes on before it says what it waits for (and again after as long).
REPORT_SECONDS = 10.0


class Listing(Protocol):
    """A watch, as far as the start-up wait is concerned."""

    @property
    def name(self) -> str: ...

    @property
    def synced(self) -> threading.Event: ...

    @property
    def listed(self) -> int: ...


class Listings(Protocol):
    @property
    def watches(self) -> Sequence[Listing]: ...


def watched_kinds() -> list[tuple[str, str, str | None]]:
    """(apiVersion, kind, label selector) of everything the operator watches: the
    InferenceServices, the cluster's InferenceServiceDefaults, and tfleet's own children of
    every kind it writes."""
    return [(API_VERSION, KIND, None), (API_VERSION, DEFAULTS_KIND, None),
            *((api_version, kind, f"{LABEL_MANAGED_BY}={MANAGER}") for api_version, kind in CHILD_KINDS)]


def wait_until_synced(listings: Listings, stop: threading.Event) -> int | None:
    """Block until every watch has delivered its first LIST; the number of objects those
    lists held, or None when `stop` was set first."""
    waited = 0.0
    while not stop.is_set():
        pending = [w for w in listings.watches if not w.synced.is_set()]
        if not pending:
            return sum(w.listed for w in listings.watches)
        if waited >= REPORT_SECONDS:
            log.warning("Waiting for the initial listings of %s", ", ".join(w.name for w in pending))
            waited = 0.0
        stop.wait(POLL_SECONDS)
        waited += POLL_SECONDS
    return None
