"""Contract suite of the local control plane, through the real kubernetes client.

Each test states one behaviour of the real apiserver that our operator or users' tools
rely on. They take a kubeconfig, so they also run against a real cluster (those that need
the local cluster's internals are marked ``simulated``).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from e2e.localcluster.testing import WIDGET_GROUP, eventually, widget

pytestmark = pytest.mark.usefixtures("widget_crd")


@pytest.fixture
def core(api_client: Any) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def apps(api_client: Any) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)


@pytest.fixture
def custom(api_client: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


def _status(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


def _cm(name: str, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, **extra}, "data": {"k": "v"}}


def _deployment(name: str, image: str = "nginx:1.27", env: list[dict[str, str]] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": image, "ports": [{"containerPort": 80}]}
    if env:
        container["env"] = env
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [container, {"name": "side", "image": "busybox:1"}]}},
        },
    }


def _raw(api_client: Any, method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None,
         query: list[tuple[str, Any]] | None = None) -> Any:
    """A request with exact headers; returns the response (status, data, headers), raises on errors."""
    all_headers = {"Accept": "application/json", **(headers or {})}
    if body is not None:
        all_headers.setdefault("Content-Type", "application/json")
    api_client.update_params_for_auth(all_headers, [], ["BearerToken"], path, method, body)
    url = api_client.configuration.host + path + ("?" + urlencode(query) if query else "")
    resp = api_client.call_api(method, url, header_params=all_headers, body=body)
    resp.read()
    if resp.status >= 400:
        raise ApiException(http_resp=resp)
    return resp


# --- errors and optimistic concurrency ---------------------------------------------------------

def test_stale_update_is_rejected_with_409_conflict(core: client.CoreV1Api, namespace: str) -> None:
    created = core.create_namespaced_config_map(namespace, _cm("stale"))
    first = core.read_namespaced_config_map("stale", namespace)
    first.data = {"k": "first"}
    core.replace_namespaced_config_map("stale", namespace, first)
    second = created  # still carries the original resourceVersion
    second.data = {"k": "second"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("stale", namespace, second)
    status = _status(err.value)
    assert (err.value.status, status["reason"]) == (409, "Conflict")
    assert status["details"] == {"name": "stale", "kind": "configmaps"}
    assert status["message"] == (
        'Operation cannot be fulfilled on configmaps "stale": the object has been modified; '
        "please apply your changes to the latest version and try again")
    assert core.read_namespaced_config_map("stale", namespace).data == {"k": "first"}


def test_errors_are_status_objects_with_reason_and_details(core: client.CoreV1Api, apps: client.AppsV1Api,
                                                           namespace: str) -> None:
    with pytest.raises(ApiException) as err:
        apps.read_namespaced_deployment("missing", namespace)
    assert err.value.status == 404
    assert _status(err.value) | {"metadata": {}} == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'deployments.apps "missing" not found', "reason": "NotFound",
        "details": {"name": "missing", "group": "apps", "kind": "deployments"}, "code": 404}
    core.create_namespaced_config_map(namespace, _cm("twice"))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(namespace, _cm("twice"))
    assert (err.value.status, _status(err.value)["reason"]) == (409, "AlreadyExists")


def test_unconditional_update_and_write_that_changes_nothing(core: client.CoreV1Api, namespace: str) -> None:
    created = core.create_namespaced_config_map(namespace, _cm("same"))
    body = _cm("same")  # no resourceVersion: an unconditional update
    again = core.replace_namespaced_config_map("same", namespace, body)
    assert again.metadata.resource_version == created.metadata.resource_version
    body["data"] = {"k": "new"}
    changed = core.replace_namespaced_config_map("same", namespace, body)
    assert int(changed.metadata.resource_version) > int(created.metadata.resource_version)


def test_method_not_allowed(api_client: Any, namespace: str) -> None:
    with pytest.raises(ApiException) as err:
        _raw(api_client, "POST", f"/api/v1/namespaces/{namespace}/configmaps/named", body={})
    assert (err.value.status, _status(err.value)["reason"]) == (405, "MethodNotAllowed")


# --- metadata, generation and status -------------------------------------------------------------

def test_generation_bumps_on_spec_changes_only_and_status_is_a_subresource(
        custom: client.CustomObjectsApi, namespace: str) -> None:
    args = (WIDGET_GROUP, "v1", namespace, "widgets")
    w = custom.create_namespaced_custom_object(*args, widget("gen", size=2))
    assert w["metadata"]["generation"] == 1
    assert w["metadata"]["uid"] and w["metadata"]["creationTimestamp"]
    assert w["spec"]["color"] == "red"  # schema default
    w = custom.patch_namespaced_custom_object_status(*args[:-1], "widgets", "gen",
                                                     {"status": {"replicas": 4}, "spec": {"size": 9}})
    assert (w["metadata"]["generation"], w["status"], w["spec"]["size"]) == (1, {"replicas": 4}, 2)
    w = custom.patch_namespaced_custom_object(*args, "gen", {"spec": {"size": 3}, "status": {"replicas": 7}})
    assert (w["metadata"]["generation"], w["spec"]["size"], w["status"]) == (2, 3, {"replicas": 4})
    w = custom.patch_namespaced_custom_object(*args, "gen", {"metadata": {"labels": {"a": "b"}}})
    assert w["metadata"]["generation"] == 2


def test_deployment_generation_and_scale_subresource(apps: client.AppsV1Api, namespace: str) -> None:
    d = apps.create_namespaced_deployment(namespace, _deployment("scaled"))
    assert d.metadata.generation == 1
    assert d.spec.strategy.rolling_update.max_surge == "25%"  # server defaults
    scale = apps.read_namespaced_deployment_scale("scaled", namespace)
    assert (scale.spec.replicas, scale.status.selector) == (0, "app=scaled")
    apps.patch_namespaced_deployment_scale("scaled", namespace, {"spec": {"replicas": 0}})
    d = apps.patch_namespaced_deployment("scaled", namespace, {"spec": {"paused": True}})
    assert d.metadata.generation == 2


def test_custom_resource_scale_subresource(custom: client.CustomObjectsApi, namespace: str) -> None:
    args = (WIDGET_GROUP, "v1", namespace, "widgets")
    custom.create_namespaced_custom_object(*args, widget("sc", replicas=1))
    scale = custom.patch_namespaced_custom_object_scale(*args, "sc", {"spec": {"replicas": 3}})
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3
    w = custom.get_namespaced_custom_object(*args, "sc")
    assert (w["spec"]["replicas"], w["metadata"]["generation"]) == (3, 2)


def test_finalizers_defer_deletion_until_removed(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, _cm("fin", finalizers=["test.localcluster.dev/hold"]))
    core.delete_namespaced_config_map("fin", namespace)
    held = core.read_namespaced_config_map("fin", namespace)
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("fin", namespace, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("fin", namespace)
    assert err.value.status == 404


# --- garbage collection --------------------------------------------------------------------------

def _owned(name: str, owner: Any, block: bool = False, finalizers: list[str] | None = None) -> dict[str, Any]:
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name, "uid": owner.metadata.uid,
           "blockOwnerDeletion": block}
    meta: dict[str, Any] = {"ownerReferences": [ref]}
    if finalizers:
        meta["finalizers"] = finalizers
    return _cm(name, **meta)


def _gone(core: client.CoreV1Api, name: str, namespace: str) -> bool:
    try:
        core.read_namespaced_config_map(name, namespace)
    except ApiException as exc:
        return exc.status == 404
    return False


def test_background_deletion_collects_dependents(core: client.CoreV1Api, namespace: str) -> None:
    owner = core.create_namespaced_config_map(namespace, _cm("owner"))
    core.create_namespaced_config_map(namespace, _owned("child-a", owner))
    core.create_namespaced_config_map(namespace, _owned("child-b", owner))
    core.delete_namespaced_config_map("owner", namespace)
    assert _gone(core, "owner", namespace)
    eventually(lambda: _gone(core, "child-a", namespace) and _gone(core, "child-b", namespace),
               message="dependents were not collected")


def test_dependent_with_a_remaining_owner_survives(core: client.CoreV1Api, namespace: str) -> None:
    a = core.create_namespaced_config_map(namespace, _cm("owner-a"))
    b = core.create_namespaced_config_map(namespace, _cm("owner-b"))
    child = _owned("shared", a)
    child["metadata"]["ownerReferences"].append(
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner-b", "uid": b.metadata.uid})
    core.create_namespaced_config_map(namespace, child)
    core.delete_namespaced_config_map("owner-a", namespace)

    def refs() -> list[str] | None:
        got = core.read_namespaced_config_map("shared", namespace)
        names = [r.name for r in got.metadata.owner_references or []]
        return names if names == ["owner-b"] else None

    assert eventually(refs, message="the dangling reference was not removed") == ["owner-b"]


def test_foreground_deletion_waits_for_blocking_dependents(core: client.CoreV1Api, namespace: str) -> None:
    owner = core.create_namespaced_config_map(namespace, _cm("fg"))
    core.create_namespaced_config_map(namespace, _owned("fg-child", owner, block=True,
                                                        finalizers=["test.localcluster.dev/hold"]))
    core.delete_namespaced_config_map("fg", namespace, propagation_policy="Foreground")
    held = core.read_namespaced_config_map("fg", namespace)
    assert held.metadata.deletion_timestamp is not None
    assert "foregroundDeletion" in held.metadata.finalizers
    eventually(lambda: core.read_namespaced_config_map("fg-child", namespace).metadata.deletion_timestamp,
               message="the dependent was not deleted")
    assert not _gone(core, "fg", namespace)  # still blocked by the dependent's finalizer
    core.patch_namespaced_config_map("fg-child", namespace, {"metadata": {"finalizers": None}})
    eventually(lambda: _gone(core, "fg", namespace) and _gone(core, "fg-child", namespace),
               message="foreground deletion did not finish")


def test_orphan_deletion_keeps_dependents_without_the_reference(core: client.CoreV1Api, namespace: str) -> None:
    owner = core.create_namespaced_config_map(namespace, _cm("orph"))
    core.create_namespaced_config_map(namespace, _owned("orph-child", owner))
    core.delete_namespaced_config_map("orph", namespace, propagation_policy="Orphan")
    eventually(lambda: _gone(core, "orph", namespace), message="the owner was not deleted")
    child = core.read_namespaced_config_map("orph-child", namespace)
    assert not child.metadata.owner_references


def test_namespace_deletion_cascades(core: client.CoreV1Api, custom: client.CustomObjectsApi) -> None:
    core.create_namespace({"metadata": {"name": "cascade-me"}})
    core.create_namespaced_config_map("cascade-me", _cm("inside"))
    custom.create_namespaced_custom_object(WIDGET_GROUP, "v1", "cascade-me", "widgets", widget("w"))
    core.delete_namespace("cascade-me")

    def gone() -> bool:
        try:
            core.read_namespace("cascade-me")
        except ApiException as exc:
            return exc.status == 404
        return False

    eventually(gone, message="the namespace was not removed")
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("cascade-me", _cm("late"))
    assert err.value.status == 404


def test_creating_in_a_terminating_namespace_is_forbidden(core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "closing"}})
    core.create_namespaced_config_map("closing", _cm("held", finalizers=["test.localcluster.dev/hold"]))
    core.delete_namespace("closing")
    try:
        eventually(lambda: core.read_namespace("closing").status.phase == "Terminating")
        with pytest.raises(ApiException) as err:
            core.create_namespaced_config_map("closing", _cm("new"))
        assert (err.value.status, _status(err.value)["reason"]) == (403, "Forbidden")
        assert "because it is being terminated" in _status(err.value)["message"]
    finally:
        core.patch_namespaced_config_map("held", "closing", {"metadata": {"finalizers": None}})


# --- watch ---------------------------------------------------------------------------------------

def test_watch_resumes_from_a_resource_version(core: client.CoreV1Api, namespace: str) -> None:
    start = core.create_namespaced_config_map(namespace, _cm("w")).metadata.resource_version
    for i in range(3):
        core.patch_namespaced_config_map("w", namespace, {"data": {"i": str(i)}})
    core.delete_namespaced_config_map("w", namespace)
    events = [(e["type"], e["object"].data.get("i") if e["object"].data else None)
              for e in watch.Watch().stream(core.list_namespaced_config_map, namespace,
                                            resource_version=start, timeout_seconds=1)]
    assert events == [("MODIFIED", "0"), ("MODIFIED", "1"), ("MODIFIED", "2"), ("DELETED", "2")]


def test_watch_without_version_starts_with_the_current_state(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, _cm("a"))
    core.create_namespaced_config_map(namespace, _cm("b"))
    events = [(e["type"], e["object"].metadata.name)
              for e in watch.Watch().stream(core.list_namespaced_config_map, namespace, timeout_seconds=1)
              if e["object"].metadata.name in ("a", "b")]
    assert events == [("ADDED", "a"), ("ADDED", "b")]


def test_watch_selector_transitions_are_added_and_deleted(core: client.CoreV1Api, namespace: str) -> None:
    start = core.create_namespaced_config_map(namespace, _cm("sel")).metadata.resource_version
    core.patch_namespaced_config_map("sel", namespace, {"metadata": {"labels": {"tier": "web"}}})
    core.patch_namespaced_config_map("sel", namespace, {"data": {"x": "1"}})
    core.patch_namespaced_config_map("sel", namespace, {"metadata": {"labels": {"tier": "db"}}})
    events = [e["type"] for e in watch.Watch().stream(
        core.list_namespaced_config_map, namespace, label_selector="tier=web",
        resource_version=start, timeout_seconds=1)]
    assert events == ["ADDED", "MODIFIED", "DELETED"]


@pytest.mark.simulated  # a real server times its bookmarks its own way
def test_watch_ends_cleanly_with_a_bookmark(api_client: Any, core: client.CoreV1Api, namespace: str) -> None:
    rv = core.create_namespaced_config_map(namespace, _cm("bm")).metadata.resource_version
    resp = _raw(api_client, "GET", f"/api/v1/namespaces/{namespace}/configmaps",
                query=[("watch", "true"), ("resourceVersion", rv), ("allowWatchBookmarks", "true"),
                       ("timeoutSeconds", "1")])
    lines = [json.loads(line) for line in resp.data.decode().splitlines() if line]
    assert lines, "expected at least one bookmark"
    assert lines[-1]["type"] == "BOOKMARK"
    assert int(lines[-1]["object"]["metadata"]["resourceVersion"]) >= int(rv)


# --- patches -------------------------------------------------------------------------------------

def test_json_patch(core: client.CoreV1Api, api_client: Any, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, _cm("jp"))
    ops = [{"op": "add", "path": "/data/new", "value": "1"}, {"op": "remove", "path": "/data/k"},
           {"op": "test", "path": "/data/new", "value": "1"}]
    resp = _raw(api_client, "PATCH", f"/api/v1/namespaces/{namespace}/configmaps/jp", body=ops,
                headers={"Content-Type": "application/json-patch+json", "Accept": "application/json"})
    assert json.loads(resp.data)["data"] == {"new": "1"}
    with pytest.raises(ApiException) as err:
        _raw(api_client, "PATCH", f"/api/v1/namespaces/{namespace}/configmaps/jp",
             body=[{"op": "test", "path": "/data/new", "value": "2"}],
             headers={"Content-Type": "application/json-patch+json", "Accept": "application/json"})
    assert err.value.status == 422


def test_merge_patch_deletes_with_null(custom: client.CustomObjectsApi, namespace: str) -> None:
    args = (WIDGET_GROUP, "v1", namespace, "widgets")
    custom.create_namespaced_custom_object(*args, widget("mp", size=2, parts={"handle": True}))
    w = custom.patch_namespaced_custom_object(*args, "mp", {"spec": {"parts": None, "size": 4}})
    assert "parts" not in w["spec"] and w["spec"]["size"] == 4


def test_strategic_merge_patch_merges_containers_by_name(apps: client.AppsV1Api, namespace: str) -> None:
    apps.create_namespaced_deployment(namespace, _deployment("smp", env=[{"name": "A", "value": "1"}]))
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "nginx:1.28", "env": [{"name": "B", "value": "2"}]}]}}}}
    d = apps.patch_namespaced_deployment("smp", namespace, patch)  # the client sends SMP for dicts
    containers = {c.name: c for c in d.spec.template.spec.containers}
    assert set(containers) == {"main", "side"}
    assert containers["main"].image == "nginx:1.28"
    assert [(e.name, e.value) for e in containers["main"].env] == [("A", "1"), ("B", "2")]


def test_strategic_merge_patch_is_unsupported_for_custom_resources(api_client: Any, custom: client.CustomObjectsApi,
                                                                   namespace: str) -> None:
    custom.create_namespaced_custom_object(WIDGET_GROUP, "v1", namespace, "widgets", widget("nosmp"))
    with pytest.raises(ApiException) as err:
        _raw(api_client, "PATCH", f"/apis/{WIDGET_GROUP}/v1/namespaces/{namespace}/widgets/nosmp",
             body={"spec": {"size": 2}}, headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert (err.value.status, _status(err.value)["reason"]) == (415, "UnsupportedMediaType")


def _apply(api_client: Any, path: str, body: dict[str, Any], manager: str, force: bool = False) -> dict[str, Any]:
    query = [("fieldManager", manager)] + ([("force", "true")] if force else [])
    resp = _raw(api_client, "PATCH", path, body=body, query=query,
                headers={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"})
    return json.loads(resp.data)


def test_server_side_apply_tracks_field_ownership(api_client: Any, namespace: str) -> None:
    path = f"/apis/{WIDGET_GROUP}/v1/namespaces/{namespace}/widgets/ssa"
    w = _apply(api_client, path, widget("ssa", size=2, color="blue"), "alice")
    assert [m["manager"] for m in w["metadata"]["managedFields"]] == ["alice"]
    # Bob applies the same value: shared ownership, no conflict.
    _apply(api_client, path, widget("ssa", size=2), "bob")
    # Bob applies a different size: conflict with alice, unless forced.
    with pytest.raises(ApiException) as err:
        _apply(api_client, path, widget("ssa", size=3), "bob")
    status = _status(err.value)
    assert (err.value.status, status["reason"]) == (409, "Conflict")
    assert '"alice"' in status["message"] and ".spec.size" in status["message"]
    w = _apply(api_client, path, widget("ssa", size=3), "bob", force=True)
    assert w["spec"]["size"] == 3
    # Alice stops applying color: the field she alone owned is removed.
    w = _apply(api_client, path, widget("ssa", size=3), "alice", force=True)
    assert w["spec"]["color"] == "red"  # removed, then defaulted again by the schema


def test_server_side_apply_creates_and_honours_dry_run(api_client: Any, custom: client.CustomObjectsApi,
                                                       namespace: str) -> None:
    path = f"/apis/{WIDGET_GROUP}/v1/namespaces/{namespace}/widgets/dry"
    resp = _raw(api_client, "PATCH", path, body=widget("dry"), query=[("fieldManager", "x"), ("dryRun", "All")],
                headers={"Content-Type": "application/apply-patch+yaml"})
    assert json.loads(resp.data)["metadata"]["name"] == "dry"
    with pytest.raises(ApiException):
        custom.get_namespaced_custom_object(WIDGET_GROUP, "v1", namespace, "widgets", "dry")
    created = _apply(api_client, path, widget("dry"), "x")
    assert created["metadata"]["uid"]


# --- admission -----------------------------------------------------------------------------------

def test_schema_violations_are_422_with_causes(custom: client.CustomObjectsApi, namespace: str) -> None:
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(WIDGET_GROUP, "v1", namespace, "widgets",
                                               widget("bad", size=0, color="green"))
    status = _status(err.value)
    assert (err.value.status, status["reason"]) == (422, "Invalid")
    assert status["message"].startswith('Widget.test.localcluster.dev "bad" is invalid: ')
    fields = {c["field"]: c["reason"] for c in status["details"]["causes"] if c.get("field")}
    assert fields["spec.size"] == "FieldValueInvalid"
    assert fields["spec.color"] == "FieldValueNotSupported"


def test_cel_rules_and_transition_rules(custom: client.CustomObjectsApi, namespace: str) -> None:
    args = (WIDGET_GROUP, "v1", namespace, "widgets")
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(*args, widget("big", size=20))
    causes = _status(err.value)["details"]["causes"]
    assert [(c["field"], "size must not exceed maxSize" in c["message"]) for c in causes] == [("spec", True)]
    custom.create_namespaced_custom_object(*args, widget("owned", owner="alice"))
    with pytest.raises(ApiException) as err:
        custom.patch_namespaced_custom_object(*args, "owned", {"spec": {"owner": "bob"}})
    causes = _status(err.value)["details"]["causes"]
    assert [c["field"] for c in causes] == ["spec.owner"]
    assert "owner is immutable" in causes[0]["message"]


def test_unknown_fields_are_pruned(custom: client.CustomObjectsApi, namespace: str) -> None:
    w = custom.create_namespaced_custom_object(WIDGET_GROUP, "v1", namespace, "widgets",
                                               widget("pruned", extra="x"))
    assert "extra" not in w["spec"]


# --- lists, selectors, pagination, printing --------------------------------------------------------

def test_label_and_field_selectors(core: client.CoreV1Api, namespace: str) -> None:
    for name, tier in (("s1", "web"), ("s2", "web"), ("s3", "db")):
        core.create_namespaced_config_map(namespace, _cm(name, labels={"tier": tier}))
    names = [c.metadata.name for c in core.list_namespaced_config_map(namespace, label_selector="tier=web").items]
    assert names == ["s1", "s2"]
    names = [c.metadata.name for c in core.list_namespaced_config_map(
        namespace, label_selector="tier in (db, cache),!missing").items]
    assert names == ["s3"]
    names = [c.metadata.name for c in core.list_namespaced_config_map(
        namespace, field_selector="metadata.name!=s1", label_selector="tier").items]
    assert names == ["s2", "s3"]


def test_limit_and_continue(core: client.CoreV1Api, namespace: str) -> None:
    for i in range(5):
        core.create_namespaced_config_map(namespace, _cm(f"page-{i}", labels={"page": "yes"}))
    seen, token, pages = [], None, 0
    while True:
        page = core.list_namespaced_config_map(namespace, label_selector="page", limit=2, _continue=token)
        seen += [c.metadata.name for c in page.items]
        pages += 1
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count == 5 - len(seen)
    assert (seen, pages) == ([f"page-{i}" for i in range(5)], 3)


def test_table_output_uses_printer_columns(api_client: Any, custom: client.CustomObjectsApi, namespace: str) -> None:
    custom.create_namespaced_custom_object(WIDGET_GROUP, "v1", namespace, "widgets", widget("tbl", size=5))
    resp = _raw(api_client, "GET", f"/apis/{WIDGET_GROUP}/v1/namespaces/{namespace}/widgets",
                headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"})
    table = json.loads(resp.data)
    assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Size", "Color", "Ready", "Age"]
    row = next(r for r in table["rows"] if r["cells"][0] == "tbl")
    assert row["cells"][1:4] == [5, "red", None]
    assert row["object"]["kind"] == "PartialObjectMetadata"


def test_discovery_serves_custom_resources(api_client: Any) -> None:
    resp = _raw(api_client, "GET", f"/apis/{WIDGET_GROUP}/v1", headers={"Accept": "application/json"})
    resources = {r["name"]: r for r in json.loads(resp.data)["resources"]}
    assert resources["widgets"]["kind"] == "Widget" and resources["widgets"]["namespaced"] is True
    assert {"widgets/status", "widgets/scale"} <= set(resources)
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    resp = _raw(api_client, "GET", "/apis", headers={"Accept": accept})
    assert "as=APIGroupDiscoveryList" in resp.headers["Content-Type"]
    groups = {g["metadata"]["name"]: g for g in json.loads(resp.data)["items"]}
    widgets = groups[WIDGET_GROUP]["versions"][0]["resources"][0]
    assert (widgets["resource"], widgets["scope"], widgets["shortNames"]) == ("widgets", "Namespaced", ["wdg"])


def test_events_in_both_api_versions_share_storage(api_client: Any, core: client.CoreV1Api,
                                                   namespace: str) -> None:
    ev = client.EventsV1Api(api_client)
    ev.create_namespaced_event(namespace, {
        "metadata": {"name": "e1"}, "eventTime": "2026-01-01T00:00:00.000000Z", "reason": "Tested",
        "note": "hello", "type": "Normal", "action": "Test", "reportingController": "tests",
        "reportingInstance": "tests-1", "regarding": {"kind": "ConfigMap", "name": "x", "namespace": namespace}})
    legacy = core.read_namespaced_event("e1", namespace)
    assert (legacy.message, legacy.involved_object.name, legacy.reason) == ("hello", "x", "Tested")
    listed = core.list_namespaced_event(namespace, field_selector="involvedObject.name=x").items
    assert [e.metadata.name for e in listed] == ["e1"]


def test_delete_collection(core: client.CoreV1Api, namespace: str) -> None:
    for i in range(3):
        core.create_namespaced_config_map(namespace, _cm(f"dc-{i}", labels={"batch": "1" if i < 2 else "2"}))
    core.delete_collection_namespaced_config_map(namespace, label_selector="batch=1")
    names = [c.metadata.name for c in core.list_namespaced_config_map(namespace, label_selector="batch").items]
    assert names == ["dc-2"]


def test_unsupported_field_selectors_are_rejected(core: client.CoreV1Api, custom: client.CustomObjectsApi,
                                                  namespace: str) -> None:
    core.create_namespaced_config_map(namespace, _cm("fs"))
    assert [c.metadata.name for c in core.list_namespaced_config_map(
        namespace, field_selector="metadata.name=fs").items] == ["fs"]
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map(namespace, field_selector="data.k=v")
    assert err.value.status == 400 and "field label not supported: data.k" in _status(err.value)["message"]
    with pytest.raises(ApiException) as err:
        custom.list_namespaced_custom_object(WIDGET_GROUP, "v1", namespace, "widgets", field_selector="spec.size=1")
    assert err.value.status == 400
    core.list_namespaced_pod(namespace, field_selector="status.phase=Running,spec.nodeName=node-1")


def test_finalize_endpoint_releases_a_stuck_namespace(core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "stuck"}})
    core.create_namespaced_config_map("stuck", _cm("held", finalizers=["test.localcluster.dev/hold"]))
    core.delete_namespace("stuck")
    ns = eventually(lambda: (lambda n: n if n.status.phase == "Terminating" else None)(core.read_namespace("stuck")))
    assert ns.spec.finalizers == ["kubernetes"]
    ns.spec.finalizers = []
    core.replace_namespace_finalize("stuck", ns)
    with pytest.raises(ApiException) as err:
        core.read_namespace("stuck")
    assert err.value.status == 404


def test_no_writes_on_the_all_namespaces_path(api_client: Any) -> None:
    with pytest.raises(ApiException) as err:
        _raw(api_client, "POST", "/api/v1/configmaps", body=_cm("nowhere"))
    assert err.value.status == 405


def test_apply_leaves_replicas_to_whoever_scales(api_client: Any, apps: client.AppsV1Api, namespace: str) -> None:
    """An operator that stops applying spec.replicas hands the field to the scaler (an HPA, kubectl)."""
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/owned"
    desired = {"apiVersion": "apps/v1", "kind": "Deployment", **_deployment("owned")}
    desired["spec"]["replicas"] = 2
    _apply(api_client, path, desired, "tfleet", force=True)
    apps.patch_namespaced_deployment_scale("owned", namespace, {"spec": {"replicas": 5}})
    with pytest.raises(ApiException) as err:  # re-applying 2 without force conflicts with the scaler
        _apply(api_client, path, desired, "tfleet")
    assert err.value.status == 409
    del desired["spec"]["replicas"]
    result = _apply(api_client, path, desired, "tfleet", force=True)
    assert result["spec"]["replicas"] == 5
    managers = {m["manager"]: m for m in result["metadata"]["managedFields"]}
    assert "f:replicas" not in json.dumps(managers["tfleet"]["fieldsV1"])


def test_an_owner_in_another_namespace_does_not_keep_a_dependent(core: client.CoreV1Api, namespace: str) -> None:
    owner = core.create_namespaced_config_map(namespace, _cm("far-owner"))
    core.create_namespace({"metadata": {"name": f"{namespace}-other"}})
    try:
        core.create_namespaced_config_map(f"{namespace}-other", _owned("cross", owner))
        eventually(lambda: _gone(core, "cross", f"{namespace}-other"),
                   message="a dependent of an owner in another namespace was kept")
    finally:
        core.delete_namespace(f"{namespace}-other")


def test_watch_as_table_streams_rows(api_client: Any, custom: client.CustomObjectsApi, namespace: str) -> None:
    start = custom.create_namespaced_custom_object(WIDGET_GROUP, "v1", namespace, "widgets",
                                                   widget("tw", size=2))["metadata"]["resourceVersion"]
    custom.patch_namespaced_custom_object(WIDGET_GROUP, "v1", namespace, "widgets", "tw", {"spec": {"size": 3}})
    resp = _raw(api_client, "GET", f"/apis/{WIDGET_GROUP}/v1/namespaces/{namespace}/widgets",
                query=[("watch", "1"), ("resourceVersion", start), ("timeoutSeconds", "1")],
                headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"})
    events = [json.loads(line) for line in resp.data.decode().splitlines() if line]
    assert [(e["type"], e["object"]["kind"], e["object"]["rows"][0]["cells"][:2]) for e in events] == [
        ("MODIFIED", "Table", ["tw", 3])]
