"""Services that carry traffic: the local kube-proxy on loopback cluster IPs.

Services without a selector get hand-made EndpointSlices whose endpoints are small TCP
servers on 127.20.x.y (see ``dataplane.py``); each greets with its own IP, so the client
knows which endpoint took its connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import pytest

from e2e.localcluster import ApiError, LocalCluster
from e2e.localcluster.controllers.proxy import KubeProxy

from .dataplane import (
    SLICES,
    Backend,
    connect_and_greet,
    data_plane_cluster,
    endpoint,
    endpoint_slice,
    eventually,
    greet_many,
    start_backends,
)

pytestmark = pytest.mark.simulated

NS = "default"


async def make_service(lc: LocalCluster, name: str, backends: list[Backend], *,
                       port_name: str = "", spec: dict[str, Any] | None = None,
                       endpoints: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Service on port 80 without selector and one slice per backend (each backend has
    its own port number, as a named targetPort resolving differently per pod gives)."""
    port: dict[str, Any] = {"port": 80, "targetPort": "web" if port_name else 8080}
    if port_name:
        port["name"] = port_name
    svc = await lc.cluster.create("v1/services", {
        "metadata": {"name": name, "namespace": NS},
        "spec": {"ports": [port], **(spec or {})}})
    for i, b in enumerate(backends):
        ep = (endpoints or [endpoint(b.ip) for b in backends])[i]
        await lc.cluster.create(SLICES, endpoint_slice(name, NS, f"{name}-{i}", b.port, [ep], port_name))
    return svc


def proxy_of(lc: LocalCluster) -> KubeProxy:
    proxy = lc.kube_proxy
    assert isinstance(proxy, KubeProxy)
    return proxy


async def refused(ip: str, port: int) -> bool:
    """Whether a connect to ``ip:port`` is refused. A reset is not a refusal: it is what a
    connect racing with the closing of the listener gets."""
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 5)
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False
    writer.close()
    return False


async def test_cluster_ips_are_loopback_and_requested_ips_must_be_in_range() -> None:
    async with LocalCluster(controllers=False) as lc:
        svc = await lc.cluster.create("v1/services", {
            "metadata": {"name": "a", "namespace": NS}, "spec": {"ports": [{"port": 80}]}})
        ip = ipaddress.ip_address(svc["spec"]["clusterIP"])
        assert ip in ipaddress.ip_network("127.96.0.0/16") and ip.is_loopback
        assert svc["spec"]["clusterIPs"] == [str(ip)]
        with pytest.raises(ApiError) as err:
            await lc.cluster.create("v1/services", {
                "metadata": {"name": "b", "namespace": NS},
                "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 80}]}})
        assert err.value.code == 422
        assert err.value.status()["message"] == (
            'Service "b" is invalid: spec.clusterIPs: Invalid value: []string{"10.96.0.20"}: '
            "failed to allocate IP 10.96.0.20: the provided IP (10.96.0.20) is not in the "
            "valid range. The range of valid IPs is 127.96.0.0/16")
        with pytest.raises(ApiError) as err:
            await lc.cluster.create("v1/services", {
                "metadata": {"name": "c", "namespace": NS},
                "spec": {"clusterIP": str(ip), "ports": [{"port": 80}]}})
        assert "provided IP is already allocated" in err.value.status()["message"]
        chosen = await lc.cluster.create("v1/services", {
            "metadata": {"name": "d", "namespace": NS},
            "spec": {"clusterIP": "127.96.0.77", "ports": [{"port": 80}]}})
        assert chosen["spec"]["clusterIP"] == "127.96.0.77"
        await lc.cluster.delete("v1/services", NS, "d")
        again = await lc.cluster.create("v1/services", {  # released with its Service
            "metadata": {"name": "e", "namespace": NS},
            "spec": {"clusterIP": "127.96.0.77", "ports": [{"port": 80}]}})
        assert again["spec"]["clusterIP"] == "127.96.0.77"


async def test_without_the_data_plane_nothing_listens() -> None:
    async with LocalCluster(controller_options={"controllers": []}) as lc:
        assert lc.kube_proxy is None and lc.dns_address is None
        backend = await Backend("127.20.0.1").start()
        try:
            svc = await make_service(lc, "quiet", [backend])
            await asyncio.sleep(0.2)  # time a proxy would have had to open the port
            assert await refused(svc["spec"]["clusterIP"], 80)
        finally:
            backend.stop()


async def test_connections_spread_over_ready_endpoints_by_port_name() -> None:
    backends = await start_backends(["127.20.1.1", "127.20.1.2", "127.20.1.3"])
    try:
        async with data_plane_cluster() as lc:
            svc = await make_service(lc, "spread", backends, port_name="http")
            ip, proxy = svc["spec"]["clusterIP"], proxy_of(lc)
            await eventually(lambda: len(proxy.endpoints(NS, "spread", "http")) == 3,
                             "kube-proxy to take the three endpoints")
            seen = await greet_many(ip, 80, 60)
            # Uniform choice: the chance that one of 3 endpoints gets none of 60 is < 1e-10.
            assert set(seen) == {b.ip for b in backends}, seen
            assert sum(seen.values()) == 60
            assert proxy.connections_opened(NS, "spread", "http") == {
                b.address: seen[b.ip] for b in backends}
            assert [b.accepted for b in backends] == [seen[b.ip] for b in backends]
            # Bytes go both ways unchanged.
            _who, reader, writer = await connect_and_greet(ip, 80)
            payload = bytes(range(256)) * 1024
            writer.write(payload)
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(len(payload)), 10) == payload
            writer.close()
    finally:
        for b in backends:
            b.stop()


async def test_unready_endpoint_gets_no_new_connections_and_keeps_open_ones() -> None:
    backends = await start_backends(["127.20.2.1", "127.20.2.2", "127.20.2.3"])
    try:
        async with data_plane_cluster() as lc:
            svc = await make_service(lc, "drain", backends)
            ip, proxy = svc["spec"]["clusterIP"], proxy_of(lc)
            await eventually(lambda: len(proxy.endpoints(NS, "drain")) == 3, "three endpoints")
            who, reader, writer = await connect_and_greet(ip, 80)
            index = next(i for i, b in enumerate(backends) if b.ip == who)
            s = await lc.cluster.get(SLICES, NS, f"drain-{index}")
            s["endpoints"][0]["conditions"]["ready"] = False
            await lc.cluster.update(SLICES, s)
            await eventually(lambda: backends[index].address not in proxy.endpoints(NS, "drain"),
                             "kube-proxy to drop the unready endpoint")
            seen = await greet_many(ip, 80, 30)
            assert who not in seen and sum(seen.values()) == 30, seen
            # The connection made before keeps its endpoint (conntrack keeps it there).
            writer.write(b"still here")
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(10), 5) == b"still here"
            writer.close()
    finally:
        for b in backends:
            b.stop()


async def test_terminating_serving_endpoints_only_when_none_is_ready() -> None:
    backends = await start_backends(["127.20.3.1", "127.20.3.2"])
    try:
        async with data_plane_cluster() as lc:
            svc = await make_service(lc, "term", backends, endpoints=[
                endpoint(backends[0].ip),
                endpoint(backends[1].ip, ready=False, serving=True, terminating=True)])
            ip, proxy = svc["spec"]["clusterIP"], proxy_of(lc)
            await eventually(lambda: proxy.endpoints(NS, "term") == [backends[0].address],
                             "only the ready endpoint in use")
            assert set(await greet_many(ip, 80, 10)) == {backends[0].ip}
            s = await lc.cluster.get(SLICES, NS, "term-0")
            s["endpoints"][0]["conditions"].update(ready=False, serving=False, terminating=True)
            await lc.cluster.update(SLICES, s)
            await eventually(lambda: proxy.endpoints(NS, "term") == [backends[1].address],
                             "the terminating but serving endpoint to take over")
            assert set(await greet_many(ip, 80, 10)) == {backends[1].ip}
            s = await lc.cluster.get(SLICES, NS, "term-1")
            s["endpoints"][0]["conditions"]["serving"] = False
            await lc.cluster.update(SLICES, s)
            await eventually(lambda: refused(ip, 80), "connections to be refused")
    finally:
        for b in backends:
            b.stop()


async def test_no_endpoints_refuses_and_deleted_service_stops_listening() -> None:
    backends = await start_backends(["127.20.4.1"])
    try:
        async with data_plane_cluster() as lc:
            svc = await lc.cluster.create("v1/services", {
                "metadata": {"name": "empty", "namespace": NS},
                "spec": {"ports": [{"port": 80, "targetPort": 8080}]}})
            ip, proxy = svc["spec"]["clusterIP"], proxy_of(lc)
            await asyncio.sleep(0.2)  # time the proxy has had to see the Service
            assert await refused(ip, 80) and not proxy.listening(NS, "empty")
            await lc.cluster.create(SLICES, endpoint_slice("empty", NS, "empty-0", backends[0].port,
                                                           [endpoint(backends[0].ip)]))
            await eventually(lambda: proxy.listening(NS, "empty"), "the listener to open")
            who, _reader, writer = await connect_and_greet(ip, 80)
            assert who == backends[0].ip
            writer.close()
            s = await lc.cluster.get(SLICES, NS, "empty-0")
            s["endpoints"] = []
            await lc.cluster.update(SLICES, s)
            await eventually(lambda: not proxy.listening(NS, "empty"), "the listener to close")
            assert await refused(ip, 80)
            await lc.cluster.create(SLICES, endpoint_slice("empty", NS, "empty-1", backends[0].port,
                                                           [endpoint(backends[0].ip)]))
            await eventually(lambda: proxy.listening(NS, "empty"), "the listener to open again")
            await lc.cluster.delete("v1/services", NS, "empty")
            await eventually(lambda: not proxy.listening(NS, "empty"), "the Service's listener to go")
            assert await refused(ip, 80)
    finally:
        for b in backends:
            b.stop()


async def test_half_close_and_resets_pass_through() -> None:
    done = asyncio.Event()

    async def count_then_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's FIN
        writer.write(f"{len(data)}\n".encode())
        await writer.drain()
        writer.close()
        done.set()

    server = await asyncio.start_server(count_then_answer, "127.20.5.1", 0)
    port = server.sockets[0].getsockname()[1]
    dead_port = _unused_port("127.20.5.2")
    try:
        async with data_plane_cluster() as lc:
            svc = await lc.cluster.create("v1/services", {
                "metadata": {"name": "half", "namespace": NS}, "spec": {"ports": [{"port": 80}]}})
            await lc.cluster.create(SLICES, endpoint_slice("half", NS, "half-0", port,
                                                           [endpoint("127.20.5.1")]))
            ip, proxy = svc["spec"]["clusterIP"], proxy_of(lc)
            await eventually(lambda: proxy.listening(NS, "half"), "the listener")
            reader, writer = await asyncio.open_connection(ip, 80)
            writer.write(b"x" * 100_000)
            writer.write_eof()  # half-close: the answer must still come back
            assert await asyncio.wait_for(reader.readline(), 5) == b"100000\n"
            assert await asyncio.wait_for(reader.read(), 5) == b""  # then the backend's FIN
            await asyncio.wait_for(done.wait(), 5)
            writer.close()
            # An endpoint that refuses: the accepted connection is reset.
            s = await lc.cluster.get(SLICES, NS, "half-0")
            s["ports"][0]["port"] = dead_port
            s["endpoints"] = [endpoint("127.20.5.2")]
            await lc.cluster.update(SLICES, s)
            await eventually(lambda: proxy.endpoints(NS, "half") == [f"127.20.5.2:{dead_port}"],
                             "the refusing endpoint in use")
            reader, writer = await asyncio.open_connection(ip, 80)
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert proxy.connect_failures(NS, "half") == {f"127.20.5.2:{dead_port}": 1}
    finally:
        server.close()


async def test_client_ip_session_affinity() -> None:
    backends = await start_backends(["127.20.6.1", "127.20.6.2", "127.20.6.3"])
    try:
        async with data_plane_cluster() as lc:
            svc = await make_service(lc, "sticky", backends, spec={"sessionAffinity": "ClientIP"})
            ip, proxy = svc["spec"]["clusterIP"], proxy_of(lc)
            await eventually(lambda: len(proxy.endpoints(NS, "sticky")) == 3, "three endpoints")
            seen = await greet_many(ip, 80, 20)  # every connection comes from 127.0.0.1
            assert len(seen) == 1 and sum(seen.values()) == 20, seen
    finally:
        for b in backends:
            b.stop()


def _unused_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


async def test_a_busy_cluster_ip_port_is_retried_until_free(caplog: pytest.LogCaptureFixture) -> None:
    backends = await start_backends(["127.20.8.1"])
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.96.0.201", 80))
    squatter.listen(1)
    try:
        async with data_plane_cluster() as lc:
            await make_service(lc, "busy", backends, spec={"clusterIP": "127.96.0.201"})
            proxy = proxy_of(lc)
            await eventually(lambda: "Failed to listen on 127.96.0.201:80" in caplog.text,
                             "the failure to be logged")
            assert not proxy.listening(NS, "busy")
            squatter.close()
            await eventually(lambda: proxy.listening(NS, "busy"), "the listener once the port is free",
                             timeout=15)
            who, _reader, writer = await connect_and_greet("127.96.0.201", 80)
            assert who == backends[0].ip
            writer.close()
    finally:
        squatter.close()
        for b in backends:
            b.stop()
