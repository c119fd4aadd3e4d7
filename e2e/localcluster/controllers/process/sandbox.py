"""Pod sandboxes: one network namespace per pod, joined to the host by a veth pair.

Inside the pod: ``lo`` up, ``eth0`` with the pod IP (/32), an on-link route to
169.254.1.1 and the default route through it. On the host: the veth end carries
169.254.1.1/32 and a /32 route to the pod IP, so the host (probes, kube-proxy, the
operator, tests) reaches the pod at its IP, and forwarding is switched on for that
interface only, so that pods can reach each other through the host.

Why a namespace and not a loopback address per pod: real servers bind 0.0.0.0 and talk to
``localhost`` (the health bridge asks ``localhost:8500``); with a namespace per pod that
works unchanged and two pods never collide on a port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from ..common import log

GATEWAY = "169.254.1.1"
NETNS_DIR = "/run/netns"


class SandboxError(Exception):
    pass


class AddressInUse(SandboxError):
    """The host already routes this pod IP (another cluster on the same machine)."""


@dataclass(frozen=True)
class Sandbox:
    netns: str
    veth: str
    pod_ip: str

    @property
    def netns_path(self) -> str:
        return f"{NETNS_DIR}/{self.netns}"


def missing_host_support() -> list[str]:
    """What this machine lacks to run pods as processes (empty: nothing)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("root privileges (network and mount namespaces need CAP_SYS_ADMIN)")
    for tool in ("ip", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            problems.append(f"the '{tool}' command (iproute2 / util-linux)")
    return problems


async def _run(args: Sequence[str], stdin: str | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate(stdin.encode() if stdin is not None else None)
    return proc.returncode or 0, out.decode(errors="replace").strip()


async def _ip(*args: str, stdin: str | None = None) -> None:
    code, out = await _run(["ip", *args], stdin)
    if code != 0:
        raise SandboxError(f"ip {' '.join(args)} failed: {out}")


async def create(sandbox: Sandbox) -> None:
    """Create the namespace, the veth pair, addresses and routes. On failure everything
    created so far is removed again."""
    try:
        await _ip("netns", "add", sandbox.netns)
        await _ip("link", "add", sandbox.veth, "type", "veth", "peer", "name", "eth0",
                  "netns", sandbox.netns)
        await _ip("-batch", "-", stdin="\n".join([
            f"addr add {GATEWAY}/32 dev {sandbox.veth}",
            f"link set {sandbox.veth} up",
        ]) + "\n")
        code, out = await _run(["ip", "route", "add", f"{sandbox.pod_ip}/32", "dev", sandbox.veth,
                                "src", GATEWAY])
        if code != 0:
            if "File exists" in out:
                raise AddressInUse(f"the host already routes {sandbox.pod_ip}")
            raise SandboxError(f"ip route add {sandbox.pod_ip}/32 failed: {out}")
        await _ip("-n", sandbox.netns, "-batch", "-", stdin="\n".join([
            "link set lo up",
            f"addr add {sandbox.pod_ip}/32 dev eth0",
            "link set eth0 up",
            f"route add {GATEWAY} dev eth0 scope link",
            f"route add default via {GATEWAY} dev eth0",
        ]) + "\n")
        # Forwarding for this interface only: pod-to-pod traffic goes through the host,
        # without changing the machine-wide net.ipv4.ip_forward.
        with open(f"/proc/sys/net/ipv4/conf/{sandbox.veth}/forwarding", "w") as f:
            f.write("1")
    except BaseException:
        await remove(sandbox.netns, sandbox.veth)
        raise


async def remove(netns: str, veth: str) -> None:
    """Delete the veth pair (its routes go with it) and the namespace; missing ones are
    fine."""
    await _run(["ip", "link", "del", veth])
    await _run(["ip", "netns", "del", netns])


def list_netns(prefix: str) -> list[str]:
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def list_links(prefix: str) -> list[str]:
    try:
        names = os.listdir("/sys/class/net")
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def remove_leftovers_sync(prefix: str) -> tuple[list[str], list[str]]:
    """Remove every namespace and host link whose name starts with ``prefix``."""
    links = list_links(prefix)
    namespaces = list_netns(prefix)
    for link in links:
        with contextlib.suppress(OSError):
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False, timeout=10)
    for ns in namespaces:
        with contextlib.suppress(OSError):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False, timeout=10)
    if links or namespaces:
        log.info("Removed leftover sandboxes: namespaces %s, links %s", namespaces, links)
    return namespaces, links
