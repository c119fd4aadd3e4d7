"""The cluster's InferenceServiceDefaults, as the operator keeps them: watched, checked,
recorded in their status, and handed to every reconcile.

    watch event ──▶ observe (no I/O: the object as seen; what its status records is in force)
                ──▶ settle  (engine.defaults.plan_defaults; the status write; Events; the log)
                ──▶ in force changed: every InferenceService is reconciled again (`on_change`)

A change that alters what runs in pods makes new revisions everywhere; the fleet's rollout
slots (`tfleet.runtime.pacing`) pace them. A refused spec leaves the recorded one in force.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tfleet.api.defaults import BUILT_IN, Defaults
from tfleet.api.times import format_time, utc_now
from tfleet.api.vocabulary import DEFAULTS_KIND, DEFAULTS_NAME
from tfleet.engine.defaults import DefaultsPlan, plan_defaults, recorded_defaults
from tfleet.runtime.cache import is_newer, slim
from tfleet.runtime.kube import KubeError

log = logging.getLogger(__name__)

Manifest = dict[str, Any]

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 60.0


def _later(delay: float, call: Callable[[], None]) -> None:
    timer = threading.Timer(delay, call)
    timer.daemon = True
    timer.start()


class ClusterDefaults:
    """Thread-safe. `kube` needs `patch_defaults_status` and `post_event`; `on_change` is
    called (outside the lock) whenever the defaults in force change."""

    def __init__(self, kube: Any, on_change: Callable[[], None] = lambda: None,
                 clock: Callable[[], datetime] = utc_now,
                 later: Callable[[float, Callable[[], None]], None] = _later):
        self.kube = kube
        self.on_change = on_change
        self.clock = clock
        self.later = later
        self._guard = threading.Lock()
        self._settling = threading.Lock()
        self._body: Manifest | None = None
        self._in_force = BUILT_IN
        # The defaults `on_change` last announced: the fleet has been asked to render with them.
        self._announced = BUILT_IN
        self._retry_delay = FIRST_RETRY_SECONDS
        self._retry_pending = False
        self._logged: tuple[Any, ...] | None = None
        self._stopped = False

    def stop(self) -> None:
        """Write nothing more (the operator stops: after this its Lease may go to another).
        A `settle` in flight finishes first."""
        with self._settling:
            self._stopped = True

    def in_force(self) -> Defaults:
        """The defaults InferenceServices are rendered with now."""
        with self._guard:
            return self._in_force

    # ------------------------------------------------------------------ events in

    def observe(self, event_type: str | None, body: Manifest) -> bool:
        """Take a watched (or written) object; whether it is the one tfleet reads. No I/O:
        what its status records is in force at once, so a restarted operator renders with the
        last accepted defaults from its first reconcile on (the fleet reconciles nothing
        before every watch, this one too, has listed)."""
        if (body.get("metadata") or {}).get("name") != DEFAULTS_NAME:
            return False
        with self._guard:
            if event_type == "DELETED":
                self._body = None
            elif self._body is None or is_newer(body, self._body):
                self._body = slim(body)
            recorded = recorded_defaults(self._body)
        # Deleted: the built-in defaults are in force at once. Otherwise what is recorded; the
        # spec itself once `settle` has recorded it.
        self._adopt(recorded)
        return True

    def settle(self) -> None:
        """Check the object, record the outcome in its status, post Events, and put the
        recorded defaults in force. Safe to call at any time, from any thread."""
        with self._settling:
            if self._stopped:
                return
            with self._guard:
                body = self._body
            plan = plan_defaults(body, format_time(self.clock()))
            if body is not None:
                try:
                    # The Events first: the status write records the transition they report,
                    # and a transition recorded is not reported again.
                    for event in plan.events:
                        self.kube.post_event(body, str(event.type), str(event.reason), event.message)
                    if plan.status is not None:
                        written = self.kube.patch_defaults_status(DEFAULTS_NAME, plan.status,
                                                                  body["metadata"].get("resourceVersion"))
                        with self._guard:
                            if is_newer(written, self._body or {"metadata": {}}):
                                self._body = slim(written)
                except KubeError as exc:
                    self._write_failed(exc)
                    return
                self._retry_delay = FIRST_RETRY_SECONDS
            self._report(body, plan)
            self._adopt(plan.in_force)

    def _write_failed(self, exc: KubeError) -> None:
        if exc.code in (404, 409):
            # Deleted, or changed since it was read: the watch brings the news, and its
            # event settles again.
            log.info("Deferred recording the %s status: %s", DEFAULTS_KIND, exc)
            return
        delay = max(self._retry_delay, exc.retry_after or 0.0)
        self._retry_delay = min(MAX_RETRY_SECONDS, self._retry_delay * 2)
        log.warning("Failed to record the %s status or its Events, retrying in %.1fs (InferenceServices keep %s): %s",
                    DEFAULTS_KIND, delay, self.in_force().describe(), exc)
        with self._guard:
            if self._retry_pending:
                return
            self._retry_pending = True

        def retry() -> None:
            with self._guard:
                self._retry_pending = False
            self.settle()

        self.later(delay, retry)

    def _report(self, body: Manifest | None, plan: DefaultsPlan) -> None:
        """One log line per outcome: the generation accepted, or why it was refused."""
        meta = (body or {}).get("metadata") or {}
        outcome = (meta.get("uid"), meta.get("generation"), plan.invalid)
        if body is None or outcome == self._logged:
            return
        self._logged = outcome
        if plan.invalid is not None:
            log.error("Refused %s %s generation %s: %s; InferenceServices keep %s", DEFAULTS_KIND,
                      meta.get("name"), meta.get("generation"), plan.invalid, plan.in_force.describe())
        else:
            log.info("Accepted %s %s generation %s", DEFAULTS_KIND, meta.get("name"), meta.get("generation"))

    def _adopt(self, defaults: Defaults) -> None:
        with self._guard:
            self._in_force = defaults
            if defaults == self._announced:
                return
            before, self._announced = self._announced, defaults
        log.info("Rendering every InferenceService with %s (was %s)", defaults.describe(), before.describe())
        self.on_change()
