"""What the kopf handlers need from the process that runs them, in one typed object.

`tfleet run` builds it and hands it to kopf as `memo.runtime`; the handlers read it from
there and never look up untyped memo keys.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tfleet.runtime.cluster_defaults import ClusterDefaults
    from tfleet.runtime.fleet import Fleet
    from tfleet.runtime.metrics import Metrics
    from tfleet.runtime.operator_health import Health


@dataclass
class OperatorRuntime:
    kubeconfig: str | None = None
    metrics: Metrics | None = None
    health: Health | None = None
    # Watching only the given namespaces: CRD scanning needs a cluster-wide grant, so it is off.
    namespaced: bool = False
    # Set to stop kopf (from its own loop).
    operator_stop: asyncio.Event | None = None
    max_rollouts: int | None = None  # rollouts running at once; None: no bound
    fleet: Fleet | None = None  # made at kopf's startup, once per process
    defaults: ClusterDefaults | None = None  # the cluster's InferenceServiceDefaults, made with the fleet
    heartbeat: asyncio.Task[None] | None = None
    # The key new revisions' drain tokens derive from (tfleet.runtime.drain_key); None: no tokens.
    drain_key: bytes | None = None
