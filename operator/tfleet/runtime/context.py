"""What the kopf handlers need from the process that runs them, in one typed object.

`tfleet run` builds it and hands it to kopf as `memo.runtime`; the handlers read it from
there and never look up untyped memo keys.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tfleet.runtime.cluster_defaults import ClusterDefaults
    from tfleet.runtime.fleet import Fleet
    from tfleet.runtime.metrics import Metrics
    from tfleet.runtime.operator_health import Health
    from tfleet.runtime.watch import Watches


@dataclass
class OperatorRuntime:
    kubeconfig: str | None = None
    metrics: Metrics | None = None
    health: Health | None = None
    # The namespaces watched; none: every namespace.
    namespaces: tuple[str, ...] = ()
    # Set to stop kopf (from its own loop).
    operator_stop: asyncio.Event | None = None
    max_rollouts: int | None = None  # rollouts running at once; None: no bound
    fleet: Fleet | None = None  # made at kopf's startup, once per process
    defaults: ClusterDefaults | None = None  # the cluster's InferenceServiceDefaults, made with the fleet
    heartbeat: asyncio.Task[None] | None = None
    # The key new revisions' drain tokens derive from (tfleet.runtime.drain_key); None: no tokens.
    drain_key: bytes | None = None
    watches: Watches | None = None  # the children's watches, started with the fleet
    stopping: threading.Event = field(default_factory=threading.Event)  # set once the operator stops
    # Set once the cache holds the initial listings and reconciles may start; `listed` counts them.
    synced: threading.Event = field(default_factory=threading.Event)
    listed: int = 0
