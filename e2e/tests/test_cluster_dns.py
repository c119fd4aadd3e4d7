"""The cluster DNS: answers over UDP and TCP to our own stub client, to glibc's resolver
(``getent`` in a mount namespace whose /etc/resolv.conf points at the server) and to
gRPC's ``dns:`` resolver with round_robin."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from e2e import processes
from e2e.localcluster import LocalCluster
from e2e.localcluster.controllers import dnswire as w

from .dataplane import (
    SLICES,
    data_plane_cluster,
    endpoint,
    endpoint_slice,
    eventually,
    random_loopback,
    start_backends,
)

pytestmark = pytest.mark.simulated

NS = "dns-test"


async def ask(lc: LocalCluster, name: str, qtype: int = w.A, **kw: Any) -> w.Message:
    assert lc.dns_address is not None
    address = lc.dns_address
    return await asyncio.get_running_loop().run_in_executor(
        None, lambda: w.query(address, name, qtype, **kw))


def addresses(m: w.Message) -> list[str]:
    return sorted(r.value() for r in m.answers if r.rtype in (w.A, w.AAAA))


async def pod(lc: LocalCluster, name: str, ip: str, ready: bool, app: str = "web") -> None:
    """A pod with an IP and a Ready condition, as a kubelet would report it."""
    await lc.cluster.create("v1/pods", {
        "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                                 "ports": [{"name": "http", "containerPort": 8080}]}]}})
    current = await lc.cluster.get("v1/pods", NS, name)
    current["status"] = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "conditions": [
        {"type": "Ready", "status": "True" if ready else "False"}]}
    await lc.cluster.update("v1/pods", current, subresource="status")


async def service(lc: LocalCluster, name: str, **spec: Any) -> dict[str, Any]:
    body = {"ports": [{"name": "http", "port": 80, "targetPort": "http"}], **spec}
    return await lc.cluster.create("v1/services", {"metadata": {"name": name, "namespace": NS},
                                                   "spec": body})


async def test_records_from_services_and_endpoint_slices() -> None:
    async with data_plane_cluster(controllers=["endpoints"]) as lc:
        await lc.cluster.create("v1/namespaces", {"metadata": {"name": NS}})
        await pod(lc, "a", "10.244.1.2", ready=True)
        await pod(lc, "b", "10.244.1.3", ready=True)
        await pod(lc, "c", "10.244.1.4", ready=False)
        web = await service(lc, "web", selector={"app": "web"})
        await service(lc, "web-headless", selector={"app": "web"}, clusterIP="None")
        await service(lc, "web-all", selector={"app": "web"}, clusterIP="None",
                      publishNotReadyAddresses=True)
        await service(lc, "nobody", selector={"app": "none"}, clusterIP="None")
        await lc.cluster.create("v1/services", {
            "metadata": {"name": "docs", "namespace": NS},
            "spec": {"type": "ExternalName", "externalName": "docs.example.org"}})
        zone = f"{NS}.svc.cluster.local"
        await eventually(lambda: _slice_count(lc, "web-all", 3), "the slices of web-all")

        m = await ask(lc, f"web.{zone}")
        assert (m.rcode, m.aa, m.ra, addresses(m)) == (w.NOERROR, True, False, [web["spec"]["clusterIP"]])
        assert [r.ttl for r in m.answers] == [5]
        # Headless: the ready endpoints only, or all of them with publishNotReadyAddresses.
        assert addresses(await ask(lc, f"web-headless.{zone}")) == ["10.244.1.2", "10.244.1.3"]
        assert addresses(await ask(lc, f"web-all.{zone}")) == ["10.244.1.2", "10.244.1.3", "10.244.1.4"]
        assert addresses(await ask(lc, f"10-244-1-3.web-headless.{zone}")) == ["10.244.1.3"]
        # Names are case-insensitive; the answer keeps the question's spelling.
        m = await ask(lc, f"WEB.{NS.upper()}.svc.Cluster.Local")
        assert addresses(m) == [web["spec"]["clusterIP"]]
        assert m.answers[0].name == f"WEB.{NS.upper()}.svc.Cluster.Local"
        # AAAA of an IPv4-only name: NOERROR without data, the zone's SOA as authority.
        m = await ask(lc, f"web-headless.{zone}", w.AAAA)
        assert (m.rcode, m.answers) == (w.NOERROR, ())
        assert [r.rtype for r in m.authority] == [w.SOA]
        assert m.authority[0].value().startswith(
            "ns.dns.cluster.local. hostmaster.cluster.local. ")
        assert m.authority[0].value().endswith(" 7200 1800 86400 5")
        # Names that do not exist.
        for name in (f"missing.{zone}", "web.elsewhere.svc.cluster.local", f"nobody.{zone}",
                     f"10-244-1-4.web-headless.{zone}", f"a.b.web.{zone}", "web.cluster.local",
                     f"10-244-1-2.{NS}.pod.cluster.local"):
            m = await ask(lc, name)
            assert (m.rcode, m.answers, [r.rtype for r in m.authority]) == (
                w.NXDOMAIN, (), [w.SOA]), name
        # Names that exist without records of their own.
        for name in (zone, "svc.cluster.local", "cluster.local"):
            assert (await ask(lc, name)).rcode == w.NOERROR, name
        # SRV: the named port, weight 100/n, the address of each target as additional data.
        m = await ask(lc, f"_http._tcp.web-headless.{zone}", w.SRV)
        assert sorted(r.value() for r in m.answers) == [
            f"0 50 8080 10-244-1-2.web-headless.{zone}.", f"0 50 8080 10-244-1-3.web-headless.{zone}."]
        assert sorted(r.value() for r in m.additional) == ["10.244.1.2", "10.244.1.3"]
        m = await ask(lc, f"_http._tcp.web.{zone}", w.SRV)
        assert [r.value() for r in m.answers] == [f"0 100 80 web.{zone}."]
        assert (await ask(lc, f"_grpc._tcp.web.{zone}", w.SRV)).rcode == w.NXDOMAIN
        # ExternalName: a CNAME (there is no upstream to follow it further).
        m = await ask(lc, f"docs.{zone}")
        assert [(r.rtype, r.value()) for r in m.answers] == [(w.CNAME, "docs.example.org.")]
        # TXT: the schema version; NOERROR for other existing names, NXDOMAIN otherwise.
        m = await ask(lc, "dns-version.cluster.local", w.TXT)
        assert [(r.value(), r.ttl) for r in m.answers] == [('"1.1.0"', 28800)]
        assert (await ask(lc, f"_grpc_config.web.{zone}", w.TXT)).rcode == w.NXDOMAIN
        assert (await ask(lc, f"web.{zone}", w.TXT)).rcode == w.NOERROR
        # Outside the zone: refused, there is no upstream.
        m = await ask(lc, "example.org")
        assert (m.rcode, m.aa) == (w.REFUSED, False)
        # The same over TCP.
        m = await ask(lc, f"web-headless.{zone}", tcp=True)
        assert addresses(m) == ["10.244.1.2", "10.244.1.3"]


async def test_answers_follow_readiness_and_large_answers_go_over_tcp() -> None:
    async with data_plane_cluster() as lc:
        await lc.cluster.create("v1/namespaces", {"metadata": {"name": NS}})
        await lc.cluster.create("v1/services", {"metadata": {"name": "big", "namespace": NS},
                                                "spec": {"clusterIP": "None", "ports": [{"port": 9000}]}})
        ips = [f"127.21.0.{i}" for i in range(1, 61)]
        await lc.cluster.create(SLICES, endpoint_slice("big", NS, "big-0", 9000,
                                                       [endpoint(ip) for ip in ips]))
        name = f"big.{NS}.svc.cluster.local"
        udp = await ask(lc, name)
        # 60 A records do not fit in 512 bytes: a truncated answer, then the whole over TCP.
        assert udp.tc and 0 < len(udp.answers) < 60
        tcp = await ask(lc, name, tcp=True)
        assert not tcp.tc and addresses(tcp) == sorted(ips)
        large = await ask(lc, name, edns_udp_size=4096)  # EDNS0: the client's payload size
        assert not large.tc and len(large.answers) == 60 and large.edns_udp_size is not None
        s = await lc.cluster.get(SLICES, NS, "big-0")
        for e in s["endpoints"][1:]:
            e["conditions"]["ready"] = False
        await lc.cluster.update(SLICES, s)
        await eventually(lambda: _answers(lc, name, ["127.21.0.1"]), "the DNS to drop unready endpoints")
        s = await lc.cluster.get(SLICES, NS, "big-0")
        s["endpoints"][0]["conditions"]["ready"] = False
        await lc.cluster.update(SLICES, s)
        # A headless Service without a ready endpoint does not exist (kubernetes.go findServices).
        await eventually(lambda: _rcode(lc, name, w.NXDOMAIN), "NXDOMAIN without ready endpoints")


async def _answers(lc: LocalCluster, name: str, expected: list[str]) -> bool:
    return addresses(await ask(lc, name)) == expected


async def _rcode(lc: LocalCluster, name: str, rcode: int) -> bool:
    return (await ask(lc, name)).rcode == rcode


def _slice_count(lc: LocalCluster, service: str, count: int) -> Any:
    async def check() -> bool:
        slices = await lc.cluster.list(SLICES, namespace=NS,
                                       label_selector=f"kubernetes.io/service-name={service}")
        return sum(len(s.get("endpoints") or []) for s in slices) == count
    return check()


async def test_glibc_resolver_with_search_path(tmp_path: Path) -> None:
    """A client set up like a pod (ClusterFirst: the cluster DNS, the pod's search path,
    ndots:5) finds short names; the search path is the client's doing, not the server's."""
    host = random_loopback()
    async with data_plane_cluster(dns_address=f"{host}:53") as lc:
        await lc.cluster.create("v1/namespaces", {"metadata": {"name": NS}})
        web = await lc.cluster.create("v1/services", {"metadata": {"name": "web", "namespace": NS},
                                                      "spec": {"ports": [{"port": 80}]}})
        resolv = tmp_path / "resolv.conf"
        resolv.write_text(f"nameserver {host}\n"
                          f"search {NS}.svc.cluster.local svc.cluster.local cluster.local\n"
                          "options ndots:5 timeout:2 attempts:2\n")
        for name in ("web", f"web.{NS}", f"web.{NS}.svc", f"web.{NS}.svc.cluster.local"):
            code, out = await _getent(resolv, name)
            assert code == 0, (name, out)
            assert out.split()[0] == web["spec"]["clusterIP"], (name, out)
        code, out = await _getent(resolv, "missing")
        assert code == 2, out  # getent: key not found


async def _getent(resolv: Path, name: str) -> tuple[int, str]:
    # A private mount namespace sees our resolv.conf in place of the machine's; it goes
    # away with the process.
    proc = await asyncio.create_subprocess_exec(
        "unshare", "--mount", "--propagation", "private", "sh", "-c",
        'mount --bind "$0" /etc/resolv.conf && exec getent ahostsv4 "$1"', str(resolv), name,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode()


class WhoAmI:
    """gRPC servers (one per IP) whose method answers with the server's IP."""

    def __init__(self, ips: list[str], port: int):
        self.servers = []
        for ip in ips:
            handler = grpc.method_handlers_generic_handler("test.Who", {
                "Am": grpc.unary_unary_rpc_method_handler(lambda _req, _ctx, ip=ip: ip.encode())})
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
            server.add_generic_rpc_handlers((handler,))
            assert server.add_insecure_port(f"{ip}:{port}") == port
            server.start()
            self.servers.append(server)

    def stop(self) -> None:
        for s in self.servers:
            s.stop(0)


def call_many(target: str, count: int, round_robin: bool) -> Counter[str]:
    options = []
    if round_robin:
        options.append(("grpc.service_config",
                        json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})))
    with grpc.insecure_channel(target, options=options) as channel:
        who = channel.unary_unary("/test.Who/Am")
        return Counter(who(b"", timeout=10, wait_for_ready=True).decode() for _ in range(count))


async def test_grpc_dns_resolver_round_robin_over_headless_service() -> None:
    assert os.environ.get("GRPC_DNS_RESOLVER", "ares") == "ares", \
        "the native resolver ignores the DNS server in dns://<server>/"
    ips = ["127.20.7.1", "127.20.7.2", "127.20.7.3"]
    # A free port on all three IPs, then gRPC servers on it.
    probes = await start_backends(ips, same_port=True)
    port = probes[0].port
    for b in probes:
        b.stop()
    servers = WhoAmI(ips, port)
    try:
        async with data_plane_cluster() as lc:
            await lc.cluster.create("v1/namespaces", {"metadata": {"name": NS}})
            for name, spec in (("model-grpc", {"clusterIP": "None"}), ("model", {})):
                await lc.cluster.create("v1/services", {
                    "metadata": {"name": name, "namespace": NS},
                    "spec": {"ports": [{"name": "grpc", "port": port}], **spec}})
                await lc.cluster.create(SLICES, endpoint_slice(
                    name, NS, f"{name}-0", port, [endpoint(ip) for ip in ips], port_name="grpc"))
            proxy = lc.kube_proxy
            assert lc.dns_address is not None and proxy is not None
            dns = "{}:{}".format(*lc.dns_address)
            await eventually(lambda: proxy.listening(NS, "model", "grpc"), "the listener")
            loop = asyncio.get_running_loop()
            # Headless: the resolver gets every pod's address, round_robin uses them all.
            seen = await loop.run_in_executor(None, call_many,
                                              f"dns://{dns}/model-grpc.{NS}.svc.cluster.local:{port}", 30, True)
            assert set(seen) == set(ips) and sum(seen.values()) == 30, seen
            # ClusterIP: one address, one connection through kube-proxy, one pod for every
            # RPC: the pinning that headless Services exist to avoid.
            seen = await loop.run_in_executor(None, call_many,
                                              f"dns://{dns}/model.{NS}.svc.cluster.local:{port}", 30, True)
            assert len(seen) == 1 and sum(seen.values()) == 30, seen
            assert sum(proxy.connections_opened(NS, "model", "grpc").values()) == 1
    finally:
        servers.stop()


def test_data_plane_options() -> None:
    from e2e.localcluster.controllers import ALL_CONTROLLERS, parse_options

    assert parse_options({})["controllers"] == ALL_CONTROLLERS  # no data plane by default
    assert parse_options({"data_plane": True})["controllers"] == (
        *ALL_CONTROLLERS, "kube-proxy", "cluster-dns")
    assert parse_options({"data_plane": True, "controllers": ["endpoints"]})["controllers"] == (
        "endpoints", "kube-proxy", "cluster-dns")
    assert parse_options({"controllers": ["kube-proxy"]})["controllers"] == ("kube-proxy",)
    assert parse_options({})["dns_address"] == "127.0.0.10:53"
    with pytest.raises(ValueError, match="data_plane"):
        parse_options({"data_plane": "yes"})
    with pytest.raises(ValueError, match="loopback"):
        parse_options({"data_plane": True, "dns_address": "10.0.0.1:53"})
    with pytest.raises(ValueError, match="dns_address"):
        parse_options({"dns_address": "127.0.0.10"})


async def test_busy_dns_address_fails_the_start() -> None:
    async with data_plane_cluster() as first:
        assert first.dns_address is not None
        busy = "{}:{}".format(*first.dns_address)
        second = data_plane_cluster(dns_address=busy)
        with pytest.raises(OSError, match=f"Failed to bind the cluster DNS on {busy}"):
            await second.start()
        assert second.kube_proxy is None  # and it cleaned up after itself


def test_cli_data_plane(tmp_path: Path) -> None:
    host = random_loopback()
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "e2e.localcluster", "--kubeconfig", str(kubeconfig),
         "--no-controllers", "--data-plane", "--dns-address", f"{host}:53"],
        cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        request = urllib.request.Request(
            f"{server}/api/v1/namespaces/default/services", method="POST",
            data=json.dumps({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            cluster_ip = json.load(resp)["spec"]["clusterIP"]
        deadline = time.monotonic() + 10
        while True:
            m = w.query((host, 53), "web.default.svc.cluster.local")
            if m.answers or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert [r.value() for r in m.answers] == [cluster_ip]
    finally:
        processes.stop(proc)
    assert proc.returncode == 0
    assert proc.stderr is not None
    assert f"Serving cluster DNS at {host}:53" in proc.stderr.read()
