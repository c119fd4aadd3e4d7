"""The simulated cluster that runs inside the local control plane.

``start(cluster, options)`` registers the nodes of a topology and starts the
controllers a real cluster would run, all against the in-process API:

- scheduler: binds pending pods to nodes (nodeSelector, node affinity, taints and
  tolerations, resource fit), or explains why not;
- kubelet: runs bound pods by their declared behaviour (docs/local-cluster-behaviours.md),
  or, on nodes labelled ``localcluster.tfleet.dev/runtime: process``, as real processes
  (``process/``);
- ReplicaSet and Deployment controllers (RollingUpdate, Recreate, status, conditions);
- Endpoints and EndpointSlice controllers for Services with selectors;
- a disruption controller that gives PodDisruptionBudgets their status;
- a HorizontalPodAutoscaler controller that keeps replicas within bounds (there is no
  metrics server).

Options (all optional):

``topology``
    The nodes, as a dict ``{"nodes": [...]}`` or list, or a path to a YAML file with
    one (see ``nodes.py``). Default: 3 CPU nodes and 2 tainted GPU nodes.
``ready_delay_seconds`` (0.2)
    How long after starting a pod with the default behaviour becomes Ready.
``crash_loop_interval_seconds`` (0.3)
    How often a crash-looping container restarts; also how long an image pull fails
    with ErrImagePull before it shows ImagePullBackOff.
``deletion_grace_seconds`` (0.2)
    The longest a terminating pod lingers (the pod's own grace period, if shorter, wins).
``hpa_sync_seconds`` (15)
    How often each HorizontalPodAutoscaler is looked at again (the real resync period).
``events`` (True)
    Record Normal events (ScalingReplicaSet, SuccessfulCreate, SuccessfulDelete, Scheduled).
    FailedScheduling and other warnings are recorded even when this is False.
``controllers`` (all)
    Names of the controllers to run: nodes, scheduler, kubelet, replicaset, deployment,
    endpoints, disruption, hpa; also kube-proxy and cluster-dns (the data plane), which
    are not started by default.
``data_plane`` (False)
    Also run the data plane: ``kube-proxy`` (Service cluster IPs that carry TCP traffic,
    ``proxy.py``) and ``cluster-dns`` (the ``cluster.local`` zone, ``dns.py``). Off by
    default: nothing listens, so fleet benchmarks can create thousands of Services.
``dns_address`` ("127.0.0.10:53")
    Where the cluster DNS listens, UDP and TCP, a loopback ``<IPv4>:<port>`` (port 0
    picks a free one).
``process_runtime`` (False)
    Label every node of the topology ``localcluster.tfleet.dev/runtime: process`` (unless
    its entry sets that label itself), so that their pods run as real processes
    (``process/``). Start-up fails if the machine cannot run them.
``storage_root`` (a directory of the run)
    The process runtime's storage: PersistentVolumeClaim ``<ns>/<claim>`` is the directory
    ``<storage_root>/volumes/<ns>/<claim>``; the TF Serving stand-in's object store is
    ``<storage_root>/objects``. Given, it is kept when the cluster stops.
``backoff_scale`` (1.0)
    Multiplies the process runtime's back-off times (crash loops and image pulls: 10 s
    doubling to 5 min, reset after 10 min); tests use e.g. 0.05.
``images`` (none)
    Extra images for the process runtime, for tests: ``{name: {entrypoint, cmd, env,
    files, workingDir}}`` (``name`` is a repository, any tag, or an exact reference;
    ``files`` maps absolute paths to content or [content, mode]).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from . import behaviour as behaviour_module
from .common import (
    EventRecorder,
    Informer,
    error_code,
    index_by_controller,
    index_by_label,
    index_by_namespace,
    log,
    now_utc,
    uid_of,
)
from .deployment import DeploymentController
from .dns import DEFAULT_ADDRESS as DEFAULT_DNS_ADDRESS
from .dns import ClusterDNS, parse_address
from .endpoints import EndpointsController, index_by_service
from .hpa import HPAController
from .kubelet import Kubelet, Timing
from .nodes import NodeLifecycleController, ensure_nodes, expand_topology
from .pdb import DisruptionController
from .process import PROCESS, RUNTIME_LABEL, check_host
from .process.images import validate_images_option
from .proxy import KubeProxy
from .replicaset import ReplicaSetController
from .scheduler import Scheduler

ALL_CONTROLLERS = (
    "nodes",
    "scheduler",
    "kubelet",
    "replicaset",
    "deployment",
    "endpoints",
    "disruption",
    "hpa",
)
# Started with the option data_plane (or when named in the option controllers).
DATA_PLANE_CONTROLLERS = ("kube-proxy", "cluster-dns")
KNOWN_CONTROLLERS = ALL_CONTROLLERS + DATA_PLANE_CONTROLLERS

__all__ = ["ALL_CONTROLLERS", "DATA_PLANE_CONTROLLERS", "KNOWN_CONTROLLERS", "parse_options",
           "start"]


def _node_index(obj: dict[str, Any]) -> list[str]:
    node = (obj.get("spec") or {}).get("nodeName")
    return [node] if node else []


def _uid_index(obj: dict[str, Any]) -> list[str]:
    return [uid_of(obj)]


def parse_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validated options with defaults filled in; raises ValueError naming the option."""
    opts = dict(options or {})
    unknown = set(opts) - {
        "topology",
        "ready_delay_seconds",
        "crash_loop_interval_seconds",
        "deletion_grace_seconds",
        "hpa_sync_seconds",
        "events",
        "controllers",
        "data_plane",
        "dns_address",
        "process_runtime",
        "storage_root",
        "backoff_scale",
        "images",
    }
    if unknown:
        raise ValueError(f"unknown simulated-cluster option(s): {sorted(unknown)}")
    topology = opts.get("topology")
    if isinstance(topology, str | Path):
        topology = yaml.safe_load(Path(topology).read_text())
    expand_topology(topology)  # validate early, at start-up
    out: dict[str, Any] = {"topology": topology}
    for name, default in (
        ("ready_delay_seconds", 0.2),
        ("crash_loop_interval_seconds", 0.3),
        ("deletion_grace_seconds", 0.2),
        ("hpa_sync_seconds", 15.0),
    ):
        value = float(opts.get(name, default))
        if value < 0 or (name == "crash_loop_interval_seconds" and value <= 0):
            raise ValueError(f"option {name} must be positive, got {value}")
        out[name] = value
    out["events"] = bool(opts.get("events", True))
    data_plane = opts.get("data_plane", False)
    if not isinstance(data_plane, bool):
        raise ValueError(f"option data_plane must be true or false, got {data_plane!r}")
    out["data_plane"] = data_plane
    dns_address = str(opts.get("dns_address", DEFAULT_DNS_ADDRESS))
    parse_address(dns_address)  # raises ValueError naming the option
    out["dns_address"] = dns_address
    controllers = list(opts.get("controllers", ALL_CONTROLLERS))
    bad = set(controllers) - set(KNOWN_CONTROLLERS)
    if bad:
        raise ValueError(f"unknown controller(s) {sorted(bad)}; known: {list(KNOWN_CONTROLLERS)}")
    if data_plane:
        controllers += [c for c in DATA_PLANE_CONTROLLERS if c not in controllers]
    out["controllers"] = tuple(controllers)
    process_runtime = opts.get("process_runtime", False)
    if not isinstance(process_runtime, bool):
        raise ValueError(f"option process_runtime must be true or false, got {process_runtime!r}")
    out["process_runtime"] = process_runtime
    storage_root = opts.get("storage_root")
    if storage_root is not None and not isinstance(storage_root, str | Path):
        raise ValueError(f"option storage_root must be a path, got {storage_root!r}")
    out["storage_root"] = Path(storage_root) if storage_root is not None else None
    try:
        scale = float(opts.get("backoff_scale", 1.0))
    except (TypeError, ValueError):
        raise ValueError(f"option backoff_scale must be a number, got {opts.get('backoff_scale')!r}") from None
    if not scale > 0:
        raise ValueError(f"option backoff_scale must be positive, got {scale}")
    out["backoff_scale"] = scale
    out["images"] = validate_images_option(opts.get("images"))
    return out


def node_default_labels(opts: Mapping[str, Any]) -> dict[str, str]:
    """Labels every node of the topology gets unless its entry sets them."""
    return {RUNTIME_LABEL: PROCESS} if opts.get("process_runtime") else {}


def uses_process_runtime(opts: Mapping[str, Any]) -> bool:
    if opts.get("process_runtime"):
        return True
    return any(
        str((entry.get("labels") or {}).get(RUNTIME_LABEL)) == PROCESS
        for entry in expand_topology(opts.get("topology"))
    )


def start(
    cluster: Any,
    options: dict[str, Any] | None = None,
    components: dict[str, Any] | None = None,
) -> list[asyncio.Task[Any]]:
    """Start the simulated cluster against ``cluster``; cancel the returned tasks to stop
    it. Must be called from within the running event loop. ``components``, if given,
    receives the data-plane objects by name (``"kube-proxy"``: KubeProxy,
    ``"cluster-dns"``: ClusterDNS) for tests and benchmarks to read."""
    opts = parse_options(options)
    enabled = set(opts["controllers"])
    if "kubelet" in enabled and uses_process_runtime(opts):
        # Fail here, loudly, rather than leave process nodes whose pods never start.
        check_host()

    def recorder(component: str) -> _Either:
        return _Either(
            EventRecorder(cluster, component, opts["events"]),
            EventRecorder(cluster, component, True),
        )

    pods = Informer(
        cluster,
        "v1/pods",
        {
            "namespace": index_by_namespace,
            "controller": index_by_controller,
            "label": index_by_label,
            "node": _node_index,
        },
    )
    nodes = Informer(cluster, "v1/nodes")
    replicasets = Informer(
        cluster, "apps/v1/replicasets", {"controller": index_by_controller, "uid": _uid_index}
    )
    deployments = Informer(cluster, "apps/v1/deployments", {"uid": _uid_index})
    services = Informer(cluster, "v1/services")
    endpoints = Informer(cluster, "v1/endpoints")
    slices = Informer(cluster, "discovery.k8s.io/v1/endpointslices", {"service": index_by_service})

    used: list[Informer] = []
    tasks: list[asyncio.Task[Any]] = []

    def use(*informers: Informer) -> None:
        for inf in informers:
            if inf not in used:
                used.append(inf)

    dns: ClusterDNS | None = None
    if "cluster-dns" in enabled:
        namespaces = Informer(cluster, "v1/namespaces")
        use(services, slices, namespaces)
        dns = ClusterDNS(cluster, services, slices, namespaces, opts["dns_address"])
        dns.bind()  # a busy address fails the start here, before any task exists

    if "nodes" in enabled:
        tasks.append(
            asyncio.create_task(
                _bootstrap(cluster, opts["topology"], node_default_labels(opts)),
                name="localcluster-nodes",
            )
        )
        use(nodes)
        tasks += NodeLifecycleController(cluster, nodes).tasks()
    if "scheduler" in enabled:
        use(pods, nodes)
        tasks += Scheduler(cluster, pods, nodes, recorder("default-scheduler")).tasks()
    if "kubelet" in enabled:
        use(pods, nodes)
        timing = Timing(opts["ready_delay_seconds"], opts["crash_loop_interval_seconds"])
        kubelet = Kubelet(
            cluster, pods, nodes, recorder("kubelet"), timing, opts["deletion_grace_seconds"],
            process_options={k: opts[k] for k in ("storage_root", "backoff_scale", "images")},
        )
        if uses_process_runtime(opts):
            kubelet.process.start()
        tasks += kubelet.tasks()
    if "replicaset" in enabled:
        use(replicasets, pods)
        tasks += ReplicaSetController(
            cluster, replicasets, pods, recorder("replicaset-controller")
        ).tasks()
    if "deployment" in enabled:
        use(deployments, replicasets, pods)
        tasks += DeploymentController(
            cluster, deployments, replicasets, pods, recorder("deployment-controller")
        ).tasks()
    if "endpoints" in enabled:
        use(services, pods, endpoints, slices, nodes)
        tasks += EndpointsController(cluster, services, pods, endpoints, slices, nodes).tasks()
    if "disruption" in enabled:
        use(pods, replicasets, deployments)
        disruption = DisruptionController(cluster, pods, replicasets, deployments)
        use(*disruption.informers())
        tasks += disruption.tasks()
    if "hpa" in enabled:
        tasks += HPAController(cluster, opts["hpa_sync_seconds"]).tasks()
    found: dict[str, Any] = {}
    if dns is not None:
        found["cluster-dns"] = dns
        tasks += dns.tasks()
    if "kube-proxy" in enabled:
        use(services, slices)
        proxy = KubeProxy(cluster, services, slices)
        found["kube-proxy"] = proxy
        tasks += proxy.tasks()
    if components is not None:
        components.update(found)
    # Informers first in the list so that they are cancelled first; the workers wait for
    # them to sync before doing anything.
    informer_tasks = [
        asyncio.create_task(_run_informer(inf), name=f"localcluster-informer-{inf.resource}")
        for inf in used
    ]
    log.info(
        "Started the simulated cluster: %s", ", ".join(c for c in KNOWN_CONTROLLERS if c in enabled)
    )
    return informer_tasks + tasks


async def _run_informer(informer: Informer) -> None:
    # A store hiccup must not leave the controllers blind for good: re-list and go on.
    while True:
        try:
            await informer.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Failed to watch %s, restarting the watch", informer.resource)
            await asyncio.sleep(0.5)


async def _bootstrap(cluster: Any, topology: Any, default_labels: dict[str, str]) -> None:
    for attempt in range(50):
        try:
            await ensure_nodes(cluster, topology, now_utc(), default_labels)
            with contextlib.suppress(Exception):
                await cluster.create(
                    "v1/namespaces",
                    {
                        "apiVersion": "v1",
                        "kind": "Namespace",
                        "metadata": {"name": behaviour_module.RULES_NAMESPACE},
                    },
                )
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if error_code(exc) == 409:
                return
            log.exception("Failed to register the nodes (attempt %d)", attempt + 1)
            await asyncio.sleep(0.2)


class _Either:
    """Routes Normal events to the optional recorder and Warning events to the one that
    is always on, so a quiet benchmark still explains why a pod is Pending."""

    def __init__(self, normal: EventRecorder, warning: EventRecorder):
        self.normal = normal
        self.warning = warning

    async def record(
        self,
        obj: Any,
        kind: str,
        api_version: str,
        event_type: str,
        reason: str,
        message: str,
        now: Any = None,
    ) -> None:
        recorder = self.warning if event_type == "Warning" else self.normal
        await recorder.record(obj, kind, api_version, event_type, reason, message, now)
