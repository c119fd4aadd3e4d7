"""Endpoints and EndpointSlices for Services with a selector.

From the pods that match a Service's selector and have an IP: ready ones as
``addresses`` (slices: ``conditions.ready=true``), unready ones as
``notReadyAddresses`` (``ready=false``), terminating ones only in slices
(``terminating=true``), unless ``publishNotReadyAddresses`` makes them all ready.
Named target ports are resolved through each pod's container ports; a pod that lacks
the named port is left out of that port's subset. Headless services are handled the
same way and labelled ``service.kubernetes.io/headless``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from .common import (
    BATCH_SECONDS,
    Informer,
    Key,
    Obj,
    SelectorIndex,
    WorkQueue,
    error_code,
    is_terminating,
    key_of,
    labels_of,
    log,
    meta,
    owner_reference,
    run_worker,
    select_by_labels,
)
from .replicaset import is_ready, random_suffix

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
ENDPOINTS_MANAGED_BY_LABEL = "endpoints.kubernetes.io/managed-by"
ENDPOINTS_MANAGED_BY = "endpoint-controller"
HEADLESS_LABEL = "service.kubernetes.io/headless"
MAX_ENDPOINTS_PER_SLICE = 100

Port = tuple[str, int, str]  # (name, port, protocol)


# ------------------------------------------------------------------------ pure logic


def selects_pods(svc: Mapping[str, Any]) -> bool:
    spec = svc.get("spec") or {}
    return bool(spec.get("selector")) and spec.get("type") != "ExternalName"


def container_port_by_name(pod: Mapping[str, Any], name: str) -> int | None:
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == name:
                return int(p["containerPort"])
    return None


def resolve_ports(svc: Mapping[str, Any], pod: Mapping[str, Any]) -> tuple[Port, ...] | None:
    """The pod's endpoint ports for the service's ports; None if the service has ports
    and none of them resolves on this pod."""
    ports = (svc.get("spec") or {}).get("ports") or []
    out: list[Port] = []
    for p in ports:
        target = p.get("targetPort", p.get("port"))
        if isinstance(target, str) and not target.isdigit():
            number = container_port_by_name(pod, target)
            if number is None:
                continue
        else:
            number = int(target)
        out.append((p.get("name") or "", number, p.get("protocol") or "TCP"))
    if ports and not out:
        return None
    return tuple(sorted(out))


def endpoint_pods(
    svc: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]
) -> Sequence[Mapping[str, Any]]:
    """Pods that can back the service: matched, with an IP, on a node, not finished."""
    return [
        p
        for p in pods
        if (p.get("status") or {}).get("podIP")
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]


def target_ref(pod: Mapping[str, Any]) -> dict[str, Any]:
    m = meta(pod)
    return {
        "kind": "Pod",
        "namespace": m.get("namespace"),
        "name": m.get("name"),
        "uid": m.get("uid"),
    }


def port_dicts(ports: tuple[Port, ...]) -> list[dict[str, Any]]:
    out = []
    for name, number, protocol in ports:
        d: dict[str, Any] = {"port": number, "protocol": protocol}
        if name:
            d = {"name": name, **d}
        out.append(d)
    return out


def slice_port_dicts(ports: tuple[Port, ...]) -> list[dict[str, Any]]:
    """EndpointSlice ports always carry a name, "" for an unnamed Service port
    (staging/src/k8s.io/endpointslice/utils.go: getEndpointPorts takes the name's address);
    kube-proxy ignores slice ports whose name is null (pkg/proxy/endpointslicecache.go)."""
    return [{"name": name, "port": number, "protocol": protocol} for name, number, protocol in ports]


def service_labels(svc: Mapping[str, Any]) -> dict[str, str]:
    labels = dict(labels_of(svc))
    if (svc.get("spec") or {}).get("clusterIP") == "None":
        labels[HEADLESS_LABEL] = ""
    return labels


def desired_endpoints(svc: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The Endpoints object for a service (without resourceVersion)."""
    publish = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
    groups: dict[tuple[Port, ...], dict[str, list[dict[str, Any]]]] = {}
    for pod in endpoint_pods(svc, pods):
        if is_terminating(pod) and not publish:
            continue
        ports = resolve_ports(svc, pod)
        if ports is None:
            continue
        address: dict[str, Any] = {"ip": pod["status"]["podIP"], "targetRef": target_ref(pod)}
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            address["nodeName"] = node
        bucket = groups.setdefault(ports, {"addresses": [], "notReadyAddresses": []})
        bucket["addresses" if publish or is_ready(pod) else "notReadyAddresses"].append(address)
    subsets = []
    for ports in sorted(groups):
        subset: dict[str, Any] = {}
        for field in ("addresses", "notReadyAddresses"):
            if groups[ports][field]:
                subset[field] = sorted(
                    groups[ports][field], key=lambda a: (_ip_key(a["ip"]), a["targetRef"]["name"])
                )
        if ports:
            subset["ports"] = port_dicts(ports)
        subsets.append(subset)
    m = meta(svc)
    labels = service_labels(svc)
    labels[ENDPOINTS_MANAGED_BY_LABEL] = ENDPOINTS_MANAGED_BY
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": m.get("name"), "namespace": m.get("namespace"), "labels": labels},
    }
    if subsets:
        obj["subsets"] = subsets
    return obj


def _ip_key(ip: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in ip.split("."))
    except ValueError:
        return (0,)


def desired_slices(
    svc: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    zones: Mapping[str, str] | None = None,
) -> list[tuple[tuple[Port, ...], list[dict[str, Any]]]]:
    """(ports, endpoints) for each EndpointSlice the service needs, at most 100
    endpoints each; one empty placeholder when no pod backs it."""
    publish = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
    groups: dict[tuple[Port, ...], list[dict[str, Any]]] = {}
    for pod in endpoint_pods(svc, pods):
        ports = resolve_ports(svc, pod)
        if ports is None:
            continue
        terminating = is_terminating(pod)
        ready = publish or is_ready(pod)
        endpoint: dict[str, Any] = {
            "addresses": [pod["status"]["podIP"]],
            "conditions": {
                "ready": publish or (ready and not terminating),
                "serving": ready,
                "terminating": terminating,
            },
            "targetRef": target_ref(pod),
        }
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            endpoint["nodeName"] = node
            if zones and zones.get(node):
                endpoint["zone"] = zones[node]
        groups.setdefault(ports, []).append(endpoint)
    out: list[tuple[tuple[Port, ...], list[dict[str, Any]]]] = []
    for ports in sorted(groups):
        endpoints = sorted(
            groups[ports], key=lambda e: (_ip_key(e["addresses"][0]), e["targetRef"]["name"])
        )
        for i in range(0, len(endpoints), MAX_ENDPOINTS_PER_SLICE):
            out.append((ports, endpoints[i : i + MAX_ENDPOINTS_PER_SLICE]))
    if not out:
        out.append(((), []))
    return out


def slice_labels(svc: Mapping[str, Any]) -> dict[str, str]:
    labels = service_labels(svc)
    labels[SERVICE_NAME_LABEL] = meta(svc)["name"]
    labels[MANAGED_BY_LABEL] = MANAGED_BY
    return labels


def slice_ports(obj: Mapping[str, Any]) -> tuple[Port, ...]:
    return tuple(
        sorted(
            (p.get("name") or "", int(p.get("port") or 0), p.get("protocol") or "TCP")
            for p in obj.get("ports") or []
        )
    )


def plan_slices(
    svc: Mapping[str, Any],
    wanted: list[tuple[tuple[Port, ...], list[dict[str, Any]]]],
    existing: Sequence[Mapping[str, Any]],
) -> tuple[
    list[tuple[Mapping[str, Any], dict[str, Any]]],
    list[dict[str, Any]],
    Sequence[Mapping[str, Any]],
]:
    """(updates as (existing, new body), creates, deletes) that turn the existing slices
    of a service into the wanted ones. Existing slices are reused for the same ports
    first, so a steady service sees no writes at all."""
    labels = slice_labels(svc)
    pool = sorted(existing, key=lambda s: meta(s).get("name") or "")
    updates: list[tuple[Mapping[str, Any], dict[str, Any]]] = []
    creates: list[dict[str, Any]] = []
    unmatched: list[tuple[tuple[Port, ...], list[dict[str, Any]]]] = []
    # First keep slices that are already exactly right, then rewrite ones with the
    # same ports: the fewest writes.
    pending: list[tuple[tuple[Port, ...], list[dict[str, Any]]]] = []
    for ports, endpoints in wanted:
        body = slice_body(svc, labels, ports, endpoints, "")
        exact = next((s for s in pool if same_slice(s, body)), None)
        if exact is None:
            pending.append((ports, endpoints))
        else:
            pool.remove(exact)
    for ports, endpoints in pending:
        match = next((s for s in pool if slice_ports(s) == ports), None)
        if match is None:
            unmatched.append((ports, endpoints))
            continue
        pool.remove(match)
        updates.append((match, slice_body(svc, labels, ports, endpoints, meta(match)["name"])))
    for ports, endpoints in unmatched:
        if pool:  # recycle a slice whose ports no longer exist
            match = pool.pop(0)
            updates.append((match, slice_body(svc, labels, ports, endpoints, meta(match)["name"])))
        else:
            creates.append(slice_body(svc, labels, ports, endpoints, None))
    return updates, creates, pool


def slice_body(
    svc: Mapping[str, Any],
    labels: dict[str, str],
    ports: tuple[Port, ...],
    endpoints: list[dict[str, Any]],
    name: str | None,
) -> dict[str, Any]:
    m = meta(svc)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name or f"{m['name']}-{random_suffix()}",
            "generateName": f"{m['name']}-",
            "namespace": m.get("namespace"),
            "labels": dict(labels),
            "ownerReferences": [{**owner_reference(svc, "v1", "Service")}],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": slice_port_dicts(ports),
    }


def same_slice(current: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    return bool(
        (current.get("endpoints") or []) == body["endpoints"]
        and (current.get("ports") or []) == body["ports"]
        and labels_of(current) == body["metadata"]["labels"]
        and current.get("addressType") == body["addressType"]
    )


def same_endpoints(current: Mapping[str, Any] | None, body: Mapping[str, Any]) -> bool:
    if current is None:
        return False
    return (current.get("subsets") or []) == (body.get("subsets") or []) and labels_of(
        current
    ) == body["metadata"]["labels"]


# ----------------------------------------------------------------------- controller


class EndpointsController:
    def __init__(
        self,
        cluster: Any,
        services: Informer,
        pods: Informer,
        endpoints: Informer,
        slices: Informer,
        nodes: Informer,
    ):
        self.cluster = cluster
        self.services = services
        self.pods = pods
        self.endpoints = endpoints
        self.slices = slices
        self.nodes = nodes
        self.queue = WorkQueue()
        # finds the services a pod may belong to without scanning every service
        self.selectors = SelectorIndex()
        services.add_handler(self._on_service)
        pods.add_handler(self._on_pod)
        endpoints.add_handler(self._on_owned)
        slices.add_handler(self._on_slice)

    def tasks(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(
                run_worker(
                    "endpoints",
                    self.queue,
                    self.reconcile,
                    [self.services, self.pods, self.endpoints, self.slices, self.nodes],
                ),
                name="localcluster-endpoints",
            )
        ]

    def _on_service(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        key = key_of(new or old or {})
        self.selectors.put(
            key, new["spec"]["selector"] if new is not None and selects_pods(new) else None
        )
        if (
            old is not None
            and new is not None
            and old.get("spec") == new.get("spec")
            and labels_of(old) == labels_of(new)
        ):
            return
        self.queue.add(key)

    def _on_pod(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        if old is not None and new is not None and not _endpoint_relevant_change(old, new):
            return
        ns = meta(new or old or {}).get("namespace") or ""
        keys: set[Key] = set()
        for obj in (old, new):
            if obj is not None:
                keys |= self.selectors.matching(ns, labels_of(obj))
        for key in keys:
            self.queue.add_after(key, BATCH_SECONDS)

    def _on_owned(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        # Someone else changed or deleted an Endpoints object we manage: put it back.
        if event_type == "DELETED" or (
            old is not None and new is not None and old.get("subsets") != new.get("subsets")
        ):
            key = key_of(new or old or {})
            if key in self.selectors:
                self.queue.add(key)

    def _on_slice(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        obj = new or old or {}
        name = labels_of(obj).get(SERVICE_NAME_LABEL)
        if event_type == "DELETED" and name and labels_of(obj).get(MANAGED_BY_LABEL) == MANAGED_BY:
            self.queue.add((meta(obj).get("namespace") or "", name))

    def _zones(self) -> dict[str, str]:
        return {
            n["metadata"]["name"]: z
            for n in self.nodes.all()
            if (z := labels_of(n).get("topology.kubernetes.io/zone"))
        }

    async def reconcile(self, key: Key) -> None:
        ns, name = key
        svc = self.services.get(ns, name)
        if svc is None:
            # The Endpoints object has no owner reference; the slices do and are
            # collected by the garbage collector.
            stale = self.endpoints.get(ns, name)
            if stale is not None:
                await self._delete("v1/endpoints", self.endpoints, stale)
            return
        if not selects_pods(svc):
            return
        if svc.get("metadata", {}).get("deletionTimestamp"):
            return
        pods = select_by_labels(self.pods, ns, svc["spec"]["selector"])
        body = desired_endpoints(svc, pods)
        current = self.endpoints.get(ns, name)
        if not same_endpoints(current, body):
            if current is None:
                try:
                    created = await self.cluster.create("v1/endpoints", body)
                except Exception as exc:
                    if error_code(exc) != 409:
                        raise
                    created = await self.cluster.update("v1/endpoints", body)
                self.endpoints.observe(created)
            else:
                self.endpoints.observe(await self.cluster.update("v1/endpoints", body))
        existing = [
            s
            for s in self.slices.by_index("service", (ns, name))
            if labels_of(s).get(MANAGED_BY_LABEL) == MANAGED_BY
        ]
        updates, creates, deletes = plan_slices(
            svc, desired_slices(svc, pods, self._zones()), existing
        )
        for _current, new_body in updates:
            self.slices.observe(
                await self.cluster.update("discovery.k8s.io/v1/endpointslices", new_body)
            )
        for new_body in creates:
            self.slices.observe(
                await self.cluster.create("discovery.k8s.io/v1/endpointslices", new_body)
            )
        for obj in deletes:
            await self._delete("discovery.k8s.io/v1/endpointslices", self.slices, obj)

    async def _delete(self, resource: str, informer: Informer, obj: Mapping[str, Any]) -> None:
        ns, name = key_of(obj)
        try:
            await self.cluster.delete(resource, ns, name)
        except Exception as exc:
            if error_code(exc) != 404:
                raise
        informer.observe_deleted(dict(obj))
        log.debug("Deleted %s %s/%s", resource, ns, name)


def _endpoint_relevant_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a pod update can change any Endpoints: labels, IP, readiness, phase,
    node, deletion or container ports."""
    if labels_of(old) != labels_of(new):
        return True
    if is_terminating(old) != is_terminating(new):
        return True
    so, sn = old.get("status") or {}, new.get("status") or {}
    if so.get("podIP") != sn.get("podIP") or so.get("phase") != sn.get("phase"):
        return True
    if is_ready(old) != is_ready(new):
        return True
    po, pn = old.get("spec") or {}, new.get("spec") or {}
    if po.get("nodeName") != pn.get("nodeName"):
        return True
    return [c.get("ports") for c in po.get("containers") or []] != [
        c.get("ports") for c in pn.get("containers") or []
    ]


def index_by_service(obj: Mapping[str, Any]) -> list[tuple[str, str]]:
    name = labels_of(obj).get(SERVICE_NAME_LABEL)
    return [(meta(obj).get("namespace") or "", name)] if name else []
