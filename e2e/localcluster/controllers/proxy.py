"""kube-proxy for the local cluster: Service cluster IPs that carry TCP connections.

For every TCP port of every Service with a cluster IP (type ClusterIP, NodePort or
LoadBalancer, not headless) a listener on ``<clusterIP>:<port>`` forwards each accepted
connection to one endpoint of the Service's EndpointSlices, chosen at random per
connection, and copies bytes both ways until both sides have closed. Cluster IPs come
from 127.96.0.0/16 (``builtins.SERVICE_CIDR``), which Linux treats as local, so the
listeners need no interface and never leave loopback.

Modelled on kube-proxy's iptables mode:

- pkg/proxy/endpointslicecache.go: endpoints are read from the slices of the Service
  (label ``kubernetes.io/service-name``), by the *name* of the Service port, with the port
  number the slice gives (the resolved ``targetPort``); slice ports with a null name or
  port 0 are ignored; duplicates across slices count once; a null ``ready`` or ``serving``
  condition means true, a null ``terminating`` false.
- pkg/proxy/topology.go (CategorizeEndpoints): new connections go to ready endpoints;
  only when none is ready, to endpoints that are serving and terminating.
- pkg/proxy/iptables/proxier.go: one ``statistic --mode random`` rule per endpoint, with
  probabilities 1/n, 1/(n-1), ... 1: a uniform choice per connection. An established
  connection keeps its endpoint (conntrack), whatever happens to the endpoint afterwards.
  ``sessionAffinity: ClientIP`` sends a client back to the endpoint it last used while
  that endpoint is usable, for ``timeoutSeconds`` (``recent --rcheck --seconds``).
  A Service port without usable endpoints gets a REJECT rule (ICMP port unreachable): the
  client's connect fails with "connection refused".

What differs from the kernel path, and why:

- "Connection refused" is produced by not listening: the listener is closed while the
  port has no usable endpoint and opened again when one appears. A connection the kernel
  had already accepted when the last endpoint went away is reset, not refused.
- The client's TCP handshake completes with the proxy before the endpoint is dialled. If
  the endpoint then refuses or is unreachable, the client sees its accepted connection
  reset (RST) instead of a refused connect; resets from either side are passed on as
  resets, end-of-stream as a half-close (FIN).
- Only cluster IPs are served: no NodePorts, external IPs or load-balancer IPs, no UDP or
  SCTP ports, no ``internalTrafficPolicy: Local`` (this host is none of the simulated
  nodes, so every endpoint is remote). Endpoints see the proxy's address as the source of
  a connection, as with kube-proxy's masquerading, not the client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .common import Informer, Key, Obj, RetryLater, WorkQueue, key_of, labels_of, log, run_worker
from .endpoints import SERVICE_NAME_LABEL

PROXIED_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
BUFFER_BYTES = 64 * 1024
# pkg/apis/core/v1/defaults.go: DefaultClientIPServiceAffinitySeconds
DEFAULT_AFFINITY_SECONDS = 10800
LISTEN_RETRY_SECONDS = 1.0


# ------------------------------------------------------------------------ pure logic


@dataclass(frozen=True)
class ServicePort:
    """One port of one Service, as kube-proxy programs it: ``<clusterIP>:<port>``."""

    namespace: str
    service: str
    port_name: str
    cluster_ip: str
    port: int
    protocol: str
    affinity_seconds: int | None  # None: sessionAffinity None

    @property
    def address(self) -> tuple[str, int]:
        return (self.cluster_ip, self.port)


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    ready: bool
    serving: bool
    terminating: bool

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


def proxied_ports(svc: Mapping[str, Any]) -> list[ServicePort]:
    """The TCP ports of a Service that the proxy serves on its cluster IP."""
    spec = svc.get("spec") or {}
    cluster_ip = spec.get("clusterIP")
    if spec.get("type", "ClusterIP") not in PROXIED_TYPES or not cluster_ip or cluster_ip == "None":
        return []
    affinity: int | None = None
    if spec.get("sessionAffinity") == "ClientIP":
        config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = int(config.get("timeoutSeconds") or DEFAULT_AFFINITY_SECONDS)
    meta = svc.get("metadata") or {}
    return [
        ServicePort(
            namespace=meta.get("namespace") or "",
            service=meta.get("name") or "",
            port_name=p.get("name") or "",
            cluster_ip=cluster_ip,
            port=int(p["port"]),
            protocol=p.get("protocol") or "TCP",
            affinity_seconds=affinity,
        )
        for p in spec.get("ports") or []
        if (p.get("protocol") or "TCP") == "TCP" and p.get("port")
    ]


def slice_endpoints(
    slices: Iterable[Mapping[str, Any]], port_name: str, protocol: str = "TCP"
) -> list[Endpoint]:
    """Every endpoint the slices give for one Service port (any condition), sorted."""
    found: dict[str, Endpoint] = {}
    for s in slices:
        if s.get("addressType", "IPv4") != "IPv4":  # the proxier's IP family
            continue
        for p in s.get("ports") or []:
            name, number = p.get("name"), p.get("port")
            if name is None or not number:
                continue
            if name != port_name or (p.get("protocol") or "TCP") != protocol:
                continue
            for e in s.get("endpoints") or []:
                addresses = e.get("addresses") or []
                if not addresses:
                    continue
                conditions = e.get("conditions") or {}
                ep = Endpoint(
                    ip=addresses[0],
                    port=int(number),
                    ready=conditions.get("ready") is not False,
                    serving=conditions.get("serving") is not False,
                    terminating=conditions.get("terminating") is True,
                )
                found.setdefault(ep.address, ep)
    return [found[k] for k in sorted(found)]


def usable_endpoints(endpoints: Sequence[Endpoint]) -> list[Endpoint]:
    """The endpoints new connections may go to: the ready ones, or, when none is ready,
    the ones that are terminating but still serving."""
    ready = [e for e in endpoints if e.ready]
    if ready:
        return ready
    return [e for e in endpoints if e.serving and e.terminating]


def choose_endpoint(
    endpoints: Sequence[Endpoint],
    rng: random.Random,
    sticky: Endpoint | None = None,
) -> Endpoint:
    """The endpoint of a new connection: the client's affinity if it is still usable,
    otherwise a uniform random pick."""
    if sticky is not None and sticky in endpoints:
        return sticky
    return endpoints[rng.randrange(len(endpoints))]


# ----------------------------------------------------------------------- data plane


@dataclass
class _Listener:
    port: ServicePort
    endpoints: list[Endpoint] = field(default_factory=list)
    server: asyncio.Server | None = None
    # client IP -> (endpoint, last connection time) for sessionAffinity ClientIP
    affinity: dict[str, tuple[Endpoint, float]] = field(default_factory=dict)


PortKey = tuple[str, str, str]  # (namespace, service, port name)


class KubeProxy:
    """Serves the cluster IPs of the Services (see the module docstring)."""

    def __init__(
        self, cluster: Any, services: Informer, slices: Informer, rng: random.Random | None = None
    ):
        self.cluster = cluster
        self.services = services
        self.slices = slices
        self.queue = WorkQueue()
        self._rng = rng or random.Random()
        self._listeners: dict[tuple[str, int], _Listener] = {}
        self._owned: dict[Key, set[tuple[str, int]]] = {}
        self._connections: set[asyncio.Task[Any]] = set()
        self._opened: dict[PortKey, Counter[str]] = {}
        self._failed: dict[PortKey, Counter[str]] = {}
        self._warned: set[tuple[str, ...]] = set()
        services.add_handler(self._on_service)
        slices.add_handler(self._on_slice)

    def tasks(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._run(), name="localcluster-kube-proxy")]

    # --- what tests and benchmarks read -------------------------------------------------

    def connections_opened(self, namespace: str, service: str, port_name: str = "") -> dict[str, int]:
        """Connections forwarded so far, per endpoint ``ip:port``."""
        return dict(self._opened.get((namespace, service, port_name)) or {})

    def connect_failures(self, namespace: str, service: str, port_name: str = "") -> dict[str, int]:
        """Connections whose endpoint could not be reached (the client got a reset)."""
        return dict(self._failed.get((namespace, service, port_name)) or {})

    def endpoints(self, namespace: str, service: str, port_name: str = "") -> list[str]:
        """The endpoints new connections go to now, as ``ip:port``."""
        listener = self._listener_of(namespace, service, port_name)
        return [e.address for e in listener.endpoints] if listener else []

    def listening(self, namespace: str, service: str, port_name: str = "") -> bool:
        listener = self._listener_of(namespace, service, port_name)
        return bool(listener and listener.server is not None)

    def _listener_of(self, namespace: str, service: str, port_name: str) -> _Listener | None:
        for address in self._owned.get((namespace, service), ()):
            listener = self._listeners.get(address)
            if listener and listener.port.port_name == port_name:
                return listener
        return None

    # --- control loop -------------------------------------------------------------------

    def _on_service(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        self.queue.add(key_of(new or old or {}))

    def _on_slice(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        for obj in (old, new):
            name = labels_of(obj).get(SERVICE_NAME_LABEL) if obj else None
            if obj and name:
                self.queue.add(((obj.get("metadata") or {}).get("namespace") or "", name))

    async def _run(self) -> None:
        try:
            await run_worker("kube-proxy", self.queue, self.reconcile, [self.services, self.slices])
        finally:
            await self._shutdown()

    async def reconcile(self, key: Key) -> None:
        """Make the listeners of one Service match its spec and its slices."""
        svc = self.services.get(*key)
        wanted: dict[tuple[str, int], tuple[ServicePort, list[Endpoint]]] = {}
        if svc is not None:
            slices = self.slices.by_index("service", key)
            for s in slices:
                if any(p.get("name") is None for p in s.get("ports") or []):
                    # endpointslicecache.go logs "Ignoring port with nil name" and so do we
                    self._warn_once(("nil-port-name", *key_of(s)),
                                    "Ignored ports without a name in EndpointSlice %s/%s "
                                    "(an unnamed Service port is name \"\")", *key_of(s))
            for sp in proxied_ports(svc):
                if not _is_loopback(sp.cluster_ip):
                    self._warn_once(("not-loopback", sp.cluster_ip),
                                    "Skipped Service %s/%s: cluster IP %s is not a loopback "
                                    "address, the local kube-proxy serves loopback only",
                                    sp.namespace, sp.service, sp.cluster_ip)
                    continue
                usable = usable_endpoints(slice_endpoints(slices, sp.port_name, sp.protocol))
                wanted[sp.address] = (sp, usable)
        for address in self._owned.get(key, set()) - set(wanted):
            self._remove(address)
        retry = False
        for address, (sp, usable) in wanted.items():
            listener = self._listeners.get(address)
            if listener is None or listener.port != sp:
                if listener is not None:
                    self._remove(address)
                listener = self._listeners[address] = _Listener(sp)
            listener.endpoints = usable
            if usable and listener.server is None:
                retry |= not await self._listen(listener)
            elif not usable and listener.server is not None:
                # No endpoint: stop listening so that connects are refused, as the
                # REJECT rule of a Service without endpoints makes them.
                listener.server.close()
                listener.server = None
                log.debug("Stopped listening on %s:%d: no endpoints", *address)
        if wanted:
            self._owned[key] = set(wanted)
        else:
            self._owned.pop(key, None)
        if retry:
            raise RetryLater(LISTEN_RETRY_SECONDS)

    async def _listen(self, listener: _Listener) -> bool:
        ip, port = listener.port.address
        try:
            listener.server = await asyncio.start_server(
                lambda r, w: self._accept(listener, r, w), host=ip, port=port, reuse_address=True
            )
        except OSError as exc:
            # Loud once per address and error, then quiet while it is retried every second.
            what = ("listen", ip, str(port), str(exc.errno))
            report = log.debug if what in self._warned else log.error
            self._warned.add(what)
            report("Failed to listen on %s:%d for Service %s/%s, retrying: %s",
                   ip, port, listener.port.namespace, listener.port.service, exc)
            return False
        self._warned = {w for w in self._warned if w[:3] != ("listen", ip, str(port))}
        log.debug("Listening on %s:%d for Service %s/%s", ip, port,
                  listener.port.namespace, listener.port.service)
        return True

    def _remove(self, address: tuple[str, int]) -> None:
        listener = self._listeners.pop(address, None)
        if listener is not None and listener.server is not None:
            listener.server.close()
            listener.server = None

    def _warn_once(self, what: tuple[str, ...], message: str, *args: Any) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(message, *args)

    async def _shutdown(self) -> None:
        for address in list(self._listeners):
            self._remove(address)
        self._owned.clear()
        connections = list(self._connections)
        for task in connections:
            task.cancel()
        if connections:
            await asyncio.wait(connections, timeout=5)

    # --- connections --------------------------------------------------------------------

    async def _accept(
        self, listener: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await self._forward(listener, reader, writer)
        except asyncio.CancelledError:
            # Cancelled by _shutdown, after the splice reset both sides. The task ends
            # normally: asyncio's stream callback (3.11) asks a finished connection task
            # for its exception, which raises for a cancelled one.
            pass
        finally:
            if task is not None:
                self._connections.discard(task)

    async def _forward(
        self, listener: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sp = listener.port
        endpoints = listener.endpoints
        if not endpoints:  # accepted just before the last endpoint went away
            _reset(writer)
            return
        client_ip = (writer.get_extra_info("peername") or ("", 0))[0]
        sticky = None
        now = time.monotonic()
        if sp.affinity_seconds is not None:
            seen = listener.affinity.get(client_ip)
            if seen is not None and now - seen[1] <= sp.affinity_seconds:
                sticky = seen[0]
        endpoint = choose_endpoint(endpoints, self._rng, sticky)
        if sp.affinity_seconds is not None:
            listener.affinity[client_ip] = (endpoint, now)
        key = (sp.namespace, sp.service, sp.port_name)
        try:
            up_reader, up_writer = await asyncio.open_connection(endpoint.ip, endpoint.port)
        except OSError as exc:
            self._failed.setdefault(key, Counter())[endpoint.address] += 1
            log.debug("Failed to connect %s/%s to %s: %s", sp.namespace, sp.service,
                      endpoint.address, exc)
            _reset(writer)
            return
        self._opened.setdefault(key, Counter())[endpoint.address] += 1
        await splice(reader, writer, up_reader, up_writer)


async def splice(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> None:
    """Copy bytes both ways until both directions have ended. An end of stream is passed
    on as a half-close; a reset on either side resets the other."""
    a_to_b = asyncio.create_task(_pump(a_reader, b_writer))
    b_to_a = asyncio.create_task(_pump(b_reader, a_writer))
    try:
        await asyncio.gather(a_to_b, b_to_a)
    except (ConnectionError, OSError):
        _reset(a_writer)
        _reset(b_writer)
    except asyncio.CancelledError:
        _reset(a_writer)
        _reset(b_writer)
        raise
    finally:
        for task in (a_to_b, b_to_a):
            task.cancel()
        for writer in (a_writer, b_writer):
            writer.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        data = await reader.read(BUFFER_BYTES)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof() and not writer.is_closing():
        writer.write_eof()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False
