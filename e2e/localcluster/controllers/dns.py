"""Cluster DNS for the local cluster: the ``cluster.local`` zone over UDP and TCP.

A small authoritative server, modelled on CoreDNS's kubernetes plugin
(plugin/kubernetes/kubernetes.go, parse.go, handler.go, object/endpoint.go and
plugin/backend_lookup.go), that answers from the Services, EndpointSlices and Namespaces
of the cluster:

- ``<svc>.<ns>.svc.cluster.local``: a Service with a cluster IP answers its cluster IPs;
  a headless Service (``clusterIP: None``) answers the addresses of its ready endpoints
  (``conditions.ready`` true or null; the EndpointSlice controller marks every endpoint
  ready when the Service sets ``publishNotReadyAddresses``), one A record per address;
  a headless Service with no ready endpoint is NXDOMAIN; an ExternalName Service answers
  a CNAME to its external name.
- ``<endpoint>.<svc>.<ns>.svc.cluster.local``: one endpoint, named by its ``hostname`` or
  its dashed IP (``10-244-1-7``).
- ``_<port>._<proto>.<svc>.<ns>.svc.cluster.local`` and the Service name itself answer
  SRV queries (priority 0, weight 100/n, target the Service or the endpoint name, its
  address in the additional section).
- ``<ns>.svc.cluster.local`` of an existing namespace, ``svc.cluster.local`` and the apex
  exist without data (NOERROR, no answers); any other name in the zone is NXDOMAIN.
  AAAA queries of IPv4-only names get NOERROR with no data, which is what gRPC's c-ares
  resolver (it asks A and AAAA) needs to go on with the A answers.
- ``dns-version.cluster.local`` TXT is ``1.1.0``; the apex has an SOA
  (``ns.dns.cluster.local. hostmaster.cluster.local.``, refresh 7200, retry 1800, expire
  86400, minimum = TTL) that negative answers carry in their authority section.
- Every record has the plugin's default TTL, 5 seconds. Answers are authoritative (AA),
  without recursion (RA clear); names outside the zone are REFUSED, as CoreDNS answers
  for a zone it has no server block for (there is no ``forward`` to an upstream here).
  Until the caches are filled, names that would be NXDOMAIN are SERVFAIL.

Not emulated: pod records (``<ip>.<ns>.pod.cluster.local``; the plugin's default
``pods disabled`` answers NXDOMAIN, which is what this server does), reverse zones (PTR),
zone transfers, IPv6, DNSSEC. Search paths and ``ndots`` are the client's business: a
client configured with ``search <ns>.svc.cluster.local svc.cluster.local cluster.local``
finds ``<svc>`` and ``<svc>.<ns>`` through this server like in a pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from . import dnswire as w
from .common import Informer, Obj, log

ZONE = "cluster.local"
# plugin/kubernetes/kubernetes.go: defaultTTL
TTL_SECONDS = 5
# plugin/kubernetes/kubernetes.go: DNSSchemaVersion, served with TTL 28800
DNS_SCHEMA_VERSION = "1.1.0"
DEFAULT_ADDRESS = "127.0.0.10:53"
TCP_IDLE_SECONDS = 10.0
MAX_CNAME_CHAIN = 10


class NoSuchName(Exception):
    """The name does not exist (NXDOMAIN)."""


@dataclass(frozen=True)
class Target:
    """One answer before it becomes records, like CoreDNS's msg.Service."""

    host: str  # an IP address, or a name (ExternalName)
    port: int  # -1 when the endpoint has no ports
    name: str  # the name the host is known by: SRV target, owner of its address record


class ZoneData(Protocol):
    """What the answers are computed from."""

    def synced(self) -> bool: ...
    def namespace_exists(self, namespace: str) -> bool: ...
    def service(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...
    def slices(self, namespace: str, name: str) -> Sequence[Mapping[str, Any]]: ...
    def serial(self) -> int: ...


# ------------------------------------------------------------------------ pure logic


def parse_address(text: str) -> tuple[str, int]:
    """``"127.0.0.10:53"`` -> (ip, port); the IP must be loopback."""
    host, sep, port_text = str(text).rpartition(":")
    try:
        port = int(port_text)
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"option dns_address must be <IPv4>:<port>, got {text!r}") from None
    if not sep or not 0 <= port <= 65535:
        raise ValueError(f"option dns_address must be <IPv4>:<port>, got {text!r}")
    if not ip.is_loopback:
        raise ValueError(f"option dns_address must be a loopback address (127.0.0.0/8), got {text!r}")
    return str(ip), port


def _dashed(ip: str) -> str:
    return ip.replace(".", "-") if "." in ip else ip.replace(":", "-")


def _ready_endpoints(slices: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, list[tuple[str, str, int]]]]:
    """(address, endpoint name, ports as (name, protocol, number)) of every ready endpoint,
    per slice as object/endpoint.go reads them: a slice without ports gets the sentinel
    port -1 so that its addresses still answer A queries."""
    out = []
    for s in slices:
        ports = [((p.get("name") or ""), (p.get("protocol") or ""),
                  int(p["port"]) if p.get("port") is not None else -1)
                 for p in s.get("ports") or []] or [("", "", -1)]
        for e in s.get("endpoints") or []:
            if (e.get("conditions") or {}).get("ready") is False:
                continue
            for address in e.get("addresses") or []:
                out.append((address, e.get("hostname") or _dashed(address), ports))
    return out


def _match(wanted: str, have: str) -> bool:
    return wanted == "" or wanted.lower() == have.lower()


def find_targets(labels: Sequence[str], data: ZoneData) -> list[Target]:
    """What a name inside the zone (labels left of ``cluster.local``, lower case) stands
    for; raises NoSuchName for a name that does not exist (parse.go parseRequest,
    kubernetes.go Records and findServices)."""
    if not labels or list(labels) in (["svc"], ["pod"]):
        return []
    kind = labels[-1]
    if kind not in ("svc", "pod"):
        raise NoSuchName()
    namespace = labels[-2]
    if not data.namespace_exists(namespace):
        raise NoSuchName()
    if kind == "pod":  # pods disabled, the plugin's default
        raise NoSuchName()
    if len(labels) == 2:
        return []  # the namespace itself: NODATA
    service_name = labels[-3]
    rest = labels[:-3]
    endpoint = port = protocol = ""
    if len(rest) == 1:
        endpoint = rest[0]
    elif len(rest) == 2:
        port, protocol = rest[0].removeprefix("_"), rest[1].removeprefix("_")
    elif len(rest) > 2:
        raise NoSuchName()
    svc = data.service(namespace, service_name)
    if svc is None:
        raise NoSuchName()
    spec = svc.get("spec") or {}
    base = f"{service_name}.{namespace}.svc.{ZONE}"
    if spec.get("type") == "ExternalName":
        external = spec.get("externalName") or ""
        if endpoint or port or protocol or not external or _is_ip(external):
            raise NoSuchName()
        return [Target(external.rstrip("."), -1, base)]
    targets: list[Target] = []
    found = False
    if spec.get("clusterIP") == "None" or endpoint:
        for address, hostname, ports in _ready_endpoints(data.slices(namespace, service_name)):
            if endpoint and endpoint != hostname.lower():
                continue
            for p_name, p_protocol, p_number in ports:
                if not (_match(port, p_name) and _match(protocol, p_protocol)):
                    continue
                found = True
                targets.append(Target(address, p_number, f"{hostname.lower()}.{base}"))
    else:
        cluster_ips = spec.get("clusterIPs") or [spec.get("clusterIP")]
        for p in spec.get("ports") or []:
            if not (_match(port, p.get("name") or "") and _match(protocol, p.get("protocol") or "TCP")):
                continue
            found = True
            targets += [Target(ip, int(p.get("port") or 0), base) for ip in cluster_ips if ip]
    if not found:
        raise NoSuchName()
    return targets


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _family(host: str) -> int:
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return 0  # a name


def soa(zone_name: str, serial: int) -> w.Record:
    # plugin/backend_lookup.go SOA: TTL min(ttl, 300), minimum = ttl
    return w.soa_record(zone_name, f"ns.dns.{ZONE}", f"hostmaster.{ZONE}", serial,
                        7200, 1800, 86400, TTL_SECONDS, min(TTL_SECONDS, 300))


def answer(query: w.Message, data: ZoneData, server_ip: str) -> w.Message:
    """The response to one query (handler.go ServeDNS)."""
    reply = w.Message(id=query.id, qr=True, opcode=query.opcode, rd=query.rd,
                      questions=query.questions, edns_udp_size=query.edns_udp_size)
    if query.qr:
        return replace(reply, rcode=w.FORMERR)
    if query.opcode != 0:
        return replace(reply, rcode=w.NOTIMP)
    if len(query.questions) != 1:
        return replace(reply, rcode=w.FORMERR)
    q = query.questions[0]
    labels = [label.lower() for label in w.labels_of(q.name)]
    zone_labels = ZONE.split(".")
    if labels[-len(zone_labels):] != zone_labels or q.qclass not in (w.CLASS_IN, w.ANY):
        return replace(reply, rcode=w.REFUSED)
    if q.qtype in (w.AXFR, w.IXFR):
        return replace(reply, rcode=w.REFUSED)
    inner = labels[:-len(zone_labels)]
    zone_name = ".".join(w.labels_of(q.name)[-len(zone_labels):])  # the query's case
    reply = replace(reply, aa=True)
    try:
        records, extra = _records(q, inner, data, server_ip)
    except NoSuchName:
        rcode = w.NXDOMAIN if data.synced() else w.SERVFAIL
        return replace(reply, rcode=rcode, authority=(soa(zone_name, data.serial()),))
    if not records:
        return replace(reply, authority=(soa(zone_name, data.serial()),))
    return replace(reply, answers=tuple(records), additional=tuple(extra))


def _records(q: w.Question, inner: list[str], data: ZoneData,
             server_ip: str) -> tuple[list[w.Record], list[w.Record]]:
    qtype = q.qtype
    if inner == ["ns", "dns"] and qtype in (w.A, w.AAAA):  # isDefaultNS: the server's own address
        return ([w.a_record(q.name, server_ip, TTL_SECONDS)] if qtype == w.A else []), []
    if qtype in (w.A, w.AAAA):
        return _address_records(q.name, inner, qtype, data, 0), []
    if qtype == w.TXT:
        if inner == ["dns-version"]:
            return [w.txt_record(q.name, DNS_SCHEMA_VERSION, 28800)], []
        # Another type exists at this name: NOERROR without data; otherwise NXDOMAIN.
        with contextlib.suppress(NoSuchName):
            if find_targets(inner, data):
                return [], []
        raise NoSuchName()
    if qtype == w.SRV:
        return _srv_records(q.name, find_targets(inner, data), data)
    if qtype == w.CNAME:
        return [w.cname_record(q.name, t.host, TTL_SECONDS)
                for t in find_targets(inner, data) if _family(t.host) == 0], []
    if qtype == w.SOA:
        return ([soa(q.name, data.serial())] if not inner else []), []
    if qtype == w.NS and not inner:
        return ([w.ns_record(q.name, f"ns.dns.{ZONE}", TTL_SECONDS)],
                [w.a_record(f"ns.dns.{ZONE}", server_ip, TTL_SECONDS)])
    # Any other type: an A lookup tells NODATA from NXDOMAIN.
    _address_records(q.name, inner, w.A, data, 0)
    return [], []


def _address_records(owner: str, inner: list[str], qtype: int, data: ZoneData,
                     depth: int) -> list[w.Record]:
    family = 4 if qtype == w.A else 6
    records: list[w.Record] = []
    seen: set[str] = set()
    for t in find_targets(inner, data):
        kind = _family(t.host)
        if kind == family and t.host not in seen:
            seen.add(t.host)
            make = w.a_record if family == 4 else w.aaaa_record
            records.append(make(owner, t.host, TTL_SECONDS))
        elif kind == 0 and depth < MAX_CNAME_CHAIN:
            cname = w.cname_record(owner, t.host, TTL_SECONDS)
            target_labels = [label.lower() for label in w.labels_of(t.host)]
            zone_labels = ZONE.split(".")
            if target_labels[-len(zone_labels):] == zone_labels:
                # A target inside the zone is followed; the chain is only answered when
                # it ends in addresses (backend_lookup.go A).
                with contextlib.suppress(NoSuchName):
                    more = _address_records(t.host, target_labels[:-len(zone_labels)], qtype,
                                            data, depth + 1)
                    if more:
                        records += [cname, *more]
            else:
                records.append(cname)  # no upstream to resolve it further
    return records


def _srv_records(owner: str, targets: list[Target],
                 data: ZoneData) -> tuple[list[w.Record], list[w.Record]]:
    # backend_lookup.go SRV: every target weighs 100 in priority 0, so each gets 100/n.
    weight = max(int(100 / len(targets)), 1) if targets else 0
    records: list[w.Record] = []
    extra: list[w.Record] = []
    seen_srv: set[tuple[str, int]] = set()
    seen_addr: set[tuple[str, str]] = set()
    for t in targets:
        if t.port == -1:
            continue
        kind = _family(t.host)
        target_name = t.host if kind == 0 else t.name
        if (target_name, t.port) not in seen_srv:
            seen_srv.add((target_name, t.port))
            records.append(w.srv_record(owner, 0, weight, t.port, target_name, TTL_SECONDS))
        if kind and (target_name, t.host) not in seen_addr:
            seen_addr.add((target_name, t.host))
            make = w.a_record if kind == 4 else w.aaaa_record
            extra.append(make(target_name, t.host, TTL_SECONDS))
    return records, extra


# ----------------------------------------------------------------------- the server


class _InformerZone:
    """ZoneData read from the controllers' informers."""

    def __init__(self, services: Informer, slices: Informer, namespaces: Informer):
        self.services = services
        self.slices_informer = slices
        self.namespaces = namespaces
        self.modified = int(time.time())
        for informer in (services, slices, namespaces):
            informer.add_handler(self._on_change)

    def _on_change(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        self.modified = int(time.time())

    def synced(self) -> bool:
        return all(i.synced.is_set() for i in (self.services, self.slices_informer, self.namespaces))

    def namespace_exists(self, namespace: str) -> bool:
        return self.namespaces.get("", namespace) is not None

    def service(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.services.get(namespace, name)

    def slices(self, namespace: str, name: str) -> Sequence[Mapping[str, Any]]:
        return self.slices_informer.by_index("service", (namespace, name))

    def serial(self) -> int:
        # kubernetes.go Serial: the time of the last change seen
        return self.modified


class ClusterDNS:
    """Serves the zone on ``address`` over UDP and TCP (see the module docstring).

    ``bind()`` opens both sockets at once, so that a busy address fails the start of the
    cluster, loudly; ``tasks()`` serves them."""

    def __init__(self, cluster: Any, services: Informer, slices: Informer, namespaces: Informer,
                 address: str = DEFAULT_ADDRESS):
        self.cluster = cluster
        self.zone = _InformerZone(services, slices, namespaces)
        self.host, self.port = parse_address(address)
        self.queries = 0
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def bind(self) -> None:
        """Bind UDP and TCP on the same port (with port 0, one picked free for both)."""
        for _attempt in range(20):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                udp.bind((self.host, self.port))
                port = udp.getsockname()[1]
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((self.host, port))
                tcp.listen(128)
            except OSError as exc:
                udp.close()
                tcp.close()
                if self.port == 0:
                    continue  # the TCP side of a free UDP port was taken: pick another
                raise OSError(exc.errno, f"Failed to bind the cluster DNS on "
                                         f"{self.host}:{self.port}: {exc.strerror}") from exc
            udp.setblocking(False)
            tcp.setblocking(False)
            self._udp, self._tcp, self.port = udp, tcp, port
            return
        raise OSError(f"Failed to find a port free for UDP and TCP on {self.host}")

    def tasks(self) -> list[asyncio.Task[None]]:
        if self._udp is None:
            self.bind()
        return [asyncio.create_task(self._serve(), name="localcluster-cluster-dns")]

    def respond(self, data: bytes, udp: bool) -> bytes | None:
        """The wire answer to one wire query; None for input too broken to answer. Over
        UDP an answer is cut to the client's payload size (512 without EDNS), with TC."""
        self.queries += 1
        try:
            query = w.decode_message(data)
        except w.WireError:
            if len(data) < 12:
                return None
            ident, flags = struct.unpack("!HH", data[:4])
            # FORMERR, echoing only the header's id and opcode
            return w.encode_message(w.Message(id=ident, qr=True, opcode=(flags >> 11) & 0xF,
                                              rcode=w.FORMERR))
        reply = answer(query, self.zone, self.host)
        limit = max(query.edns_udp_size or 0, w.CLASSIC_UDP_LIMIT) if udp else None
        return w.encode_message(reply, limit)

    async def _serve(self) -> None:
        assert self._udp is not None and self._tcp is not None
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=self._udp)
        server = await asyncio.start_server(self._tcp_client, sock=self._tcp)
        log.info("Serving cluster DNS for %s on %s:%d (UDP and TCP)", ZONE, self.host, self.port)
        try:
            await asyncio.Future()
        finally:
            transport.close()
            server.close()
            for task in list(self._connections):
                task.cancel()
            if self._connections:
                await asyncio.wait(list(self._connections), timeout=2)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            while True:
                header = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_SECONDS)
                data = await asyncio.wait_for(reader.readexactly(struct.unpack("!H", header)[0]),
                                              TCP_IDLE_SECONDS)
                out = self.respond(data, udp=False)
                if out is None:
                    break
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # cancelled at shutdown; ends normally (see KubeProxy._accept)
        finally:
            writer.close()
            if task is not None:
                self._connections.discard(task)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, dns: ClusterDNS):
        self.dns = dns
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            out = self.dns.respond(data, udp=True)
        except Exception:
            log.exception("Failed to answer a DNS query from %s:%d", *addr)
            return
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)


