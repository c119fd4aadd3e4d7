"""Patch semantics of the local control plane, case by case against the apiserver's."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from e2e.localcluster._fieldpath import decode_fields, encode_fields, path_string
from e2e.localcluster.patching import (
    ApplyConflict,
    PatchError,
    UnsupportedPatch,
    json_patch,
    merge_patch,
    record_update,
    server_side_apply,
    strategic_merge_patch,
)

DEPLOYMENT = "apps/v1/Deployment"


def deployment(**spec: Any) -> dict[str, Any]:
    """A small Deployment; keyword arguments override top-level spec fields."""
    obj: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "resnet", "namespace": "ml", "labels": {"app": "resnet"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "resnet"}},
            "template": {
                "metadata": {"labels": {"app": "resnet"}},
                "spec": {
                    "containers": [
                        {
                            "name": "serving",
                            "image": "tensorflow/serving:2.19.0",
                            "args": ["--port=8500"],
                            "ports": [{"containerPort": 8500, "name": "grpc"}],
                            "env": [{"name": "A", "value": "1"}],
                        }
                    ]
                },
            },
        },
    }
    obj["spec"].update(spec)
    return obj


def container(obj: dict[str, Any], name: str = "serving") -> dict[str, Any]:
    for c in obj["spec"]["template"]["spec"]["containers"]:
        if c["name"] == name:
            return dict(c)
    raise KeyError(name)


def managers(obj: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """(manager, operation) -> owned paths, printed like structured-merge-diff."""
    out: dict[tuple[str, str], set[str]] = {}
    for entry in obj["metadata"].get("managedFields") or []:
        key = (entry["manager"], entry["operation"])
        out[key] = {path_string(p) for p in decode_fields(entry["fieldsV1"])}
    return out


# ---------------------------------------------------------------------------------------------
# JSON patch (RFC 6902)

BASE = {"metadata": {"name": "a", "labels": {"x": "1", "a/b": "2", "t~n": "3"}}, "list": [1, 2, 3]}

JSON_PATCH_CASES = [
    ("add sets a new map key", [{"op": "add", "path": "/metadata/labels/y", "value": "9"}],
     lambda o: o["metadata"]["labels"]["y"] == "9"),
    ("add with '-' appends to a list", [{"op": "add", "path": "/list/-", "value": 4}],
     lambda o: o["list"] == [1, 2, 3, 4]),
    ("add at an index inserts before it", [{"op": "add", "path": "/list/0", "value": 0}],
     lambda o: o["list"] == [0, 1, 2, 3]),
    ("remove deletes a key", [{"op": "remove", "path": "/metadata/labels/x"}],
     lambda o: "x" not in o["metadata"]["labels"]),
    ("remove by index shifts the list", [{"op": "remove", "path": "/list/1"}],
     lambda o: o["list"] == [1, 3]),
    ("replace overwrites a value", [{"op": "replace", "path": "/list/2", "value": 30}],
     lambda o: o["list"] == [1, 2, 30]),
    ("~1 escapes a slash in a key", [{"op": "replace", "path": "/metadata/labels/a~1b", "value": "z"}],
     lambda o: o["metadata"]["labels"]["a/b"] == "z"),
    ("~0 escapes a tilde in a key", [{"op": "remove", "path": "/metadata/labels/t~0n"}],
     lambda o: "t~n" not in o["metadata"]["labels"]),
    ("move takes the value away from its source", [{"op": "move", "from": "/metadata/labels/x", "path": "/moved"}],
     lambda o: o["moved"] == "1" and "x" not in o["metadata"]["labels"]),
    ("copy leaves the source in place", [{"op": "copy", "from": "/list", "path": "/copied"}],
     lambda o: o["copied"] == [1, 2, 3] and o["list"] == [1, 2, 3]),
    ("a passing test lets the next operation run",
     [{"op": "test", "path": "/metadata/name", "value": "a"}, {"op": "add", "path": "/ok", "value": True}],
     lambda o: o["ok"] is True),
    ("test compares numbers as JSON does (1 equals 1.0)", [{"op": "test", "path": "/list/0", "value": 1.0}],
     lambda o: o["list"][0] == 1),
]  # fmt: skip


@pytest.mark.parametrize(
    ("ops", "check"), [c[1:] for c in JSON_PATCH_CASES], ids=[c[0] for c in JSON_PATCH_CASES]
)
def test_json_patch(ops: list[dict[str, Any]], check: Any) -> None:
    before = copy.deepcopy(BASE)
    assert check(json_patch(BASE, ops))
    assert before == BASE, "the input must not be modified"


JSON_PATCH_ERRORS = [
    ("a failing test aborts the whole patch", [{"op": "test", "path": "/metadata/name", "value": "b"}],
     "testing value /metadata/name failed: test failed"),
    ("remove of a missing key", [{"op": "remove", "path": "/metadata/nope"}],
     'remove operation does not apply: doc is missing path: "/metadata/nope": missing value'),
    ("replace of a missing key", [{"op": "replace", "path": "/spec/x", "value": 1}],
     'replace operation does not apply: doc is missing path: "/spec/x": missing value'),
    ("add below a missing parent", [{"op": "add", "path": "/a/b/c", "value": 1}],
     'add operation does not apply: doc is missing path: "/a/b/c": missing value'),
    ("an index past the end", [{"op": "add", "path": "/list/9", "value": 1}],
     "index out of range"),
    ("an unknown operation", [{"op": "frobnicate", "path": "/x"}], "Unexpected kind: frobnicate"),
    ("a move into its own child", [{"op": "move", "from": "/metadata", "path": "/metadata/x"}],
     "cannot move"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("ops", "message"), [c[1:] for c in JSON_PATCH_ERRORS], ids=[c[0] for c in JSON_PATCH_ERRORS]
)
def test_json_patch_errors(ops: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(PatchError, match=re.escape(message)):
        json_patch(BASE, ops)


def test_json_patch_all_or_nothing() -> None:
    ops = [{"op": "add", "path": "/x", "value": 1}, {"op": "remove", "path": "/nope"}]
    with pytest.raises(PatchError):
        json_patch(BASE, ops)
    assert "x" not in BASE


# ---------------------------------------------------------------------------------------------
# JSON merge patch (RFC 7386)

MERGE_CASES = [
    ("maps merge key by key", {"a": {"b": 1}}, {"a": {"c": 2}}, {"a": {"b": 1, "c": 2}}),
    ("null deletes a key", {"a": 1, "b": 2}, {"a": None}, {"b": 2}),
    ("null for a missing key is a no-op", {"a": 1}, {"z": None}, {"a": 1}),
    ("lists are replaced whole", {"l": [1, 2, 3]}, {"l": [9]}, {"l": [9]}),
    ("a map replaces a scalar", {"a": 1}, {"a": {"b": None, "c": 1}}, {"a": {"c": 1}}),
    ("a scalar replaces a map", {"a": {"b": 1}}, {"a": "x"}, {"a": "x"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("obj", "patch", "want"), [c[1:] for c in MERGE_CASES], ids=[c[0] for c in MERGE_CASES]
)
def test_merge_patch(obj: dict[str, Any], patch: dict[str, Any], want: dict[str, Any]) -> None:
    assert merge_patch(obj, patch) == want


# ---------------------------------------------------------------------------------------------
# Strategic merge patch


def smp(patch: dict[str, Any], obj: dict[str, Any] | None = None, kind: str = DEPLOYMENT) -> Any:
    return strategic_merge_patch(obj or deployment(), patch, kind)


def tpl(spec: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"template": {"spec": spec}}}


SMP_CASES = [
    (
        "containers merge by name: only the named container's image changes",
        tpl({"containers": [{"name": "serving", "image": "tensorflow/serving:2.20.0"}]}),
        lambda o: container(o)["image"] == "tensorflow/serving:2.20.0"
        and container(o)["ports"] == [{"containerPort": 8500, "name": "grpc"}],
    ),
    (
        "a container with a new name is appended",
        tpl({"containers": [{"name": "sidecar", "image": "envoy"}]}),
        lambda o: [c["name"] for c in o["spec"]["template"]["spec"]["containers"]] == ["serving", "sidecar"],
    ),
    (
        "$patch: delete removes the container with that name",
        tpl({"containers": [{"name": "serving", "$patch": "delete"}]}),
        lambda o: o["spec"]["template"]["spec"]["containers"] == [],
    ),
    (
        "$patch: replace inside a list replaces the whole list",
        tpl({"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}),
        lambda o: o["spec"]["template"]["spec"]["containers"] == [{"name": "only", "image": "x"}],
    ),
    (
        "env merges by name",
        tpl({"containers": [{"name": "serving", "env": [{"name": "B", "value": "2"}]}]}),
        lambda o: container(o)["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
    ),
    (
        "container ports merge by containerPort",
        tpl({"containers": [{"name": "serving", "ports": [{"containerPort": 8500, "name": "g"}, {"containerPort": 8501}]}]}),
        lambda o: container(o)["ports"] == [{"containerPort": 8500, "name": "g"}, {"containerPort": 8501}],
    ),
    (
        "args are atomic: the patch list replaces them",
        tpl({"containers": [{"name": "serving", "args": ["--rest_api_port=8501"]}]}),
        lambda o: container(o)["args"] == ["--rest_api_port=8501"],
    ),
    (
        "tolerations are atomic: the patch list replaces them",
        tpl({"tolerations": [{"key": "gpu", "operator": "Exists"}]}),
        lambda o: o["spec"]["template"]["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists"}],
    ),
    (
        "volumes merge by name and volumeMounts by mountPath",
        tpl({"volumes": [{"name": "tmp", "emptyDir": {}}],
             "containers": [{"name": "serving", "volumeMounts": [{"mountPath": "/tmp", "name": "tmp"}]}]}),
        lambda o: [v["name"] for v in o["spec"]["template"]["spec"]["volumes"]] == ["models", "tmp"]
        and container(o)["volumeMounts"] == [{"mountPath": "/tmp", "name": "tmp"}],
    ),
    (
        "null deletes a label, other labels stay",
        {"metadata": {"labels": {"app": None, "tier": "ml"}}},
        lambda o: o["metadata"]["labels"] == {"tier": "ml"},
    ),
    (
        "finalizers merge as a set",
        {"metadata": {"finalizers": ["b", "a"]}},
        lambda o: o["metadata"]["finalizers"] == ["a", "b"],
    ),
    (
        "$deleteFromPrimitiveList removes values from a set",
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}},
        lambda o: o["metadata"]["finalizers"] == [],
    ),
    (
        "$retainKeys drops the keys it does not list (strategy type switch)",
        {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}},
        lambda o: o["spec"]["strategy"] == {"type": "Recreate"},
    ),
    (
        "$setElementOrder puts merged containers in the given order",
        tpl({"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "serving"}],
             "containers": [{"name": "sidecar", "image": "envoy"}]}),
        lambda o: [c["name"] for c in o["spec"]["template"]["spec"]["containers"]] == ["sidecar", "serving"],
    ),
    (
        "owner references merge by uid",
        {"metadata": {"ownerReferences": [{"uid": "u2", "name": "b", "kind": "X", "apiVersion": "v1"}]}},
        lambda o: [r["uid"] for r in o["metadata"]["ownerReferences"]] == ["u1", "u2"],
    ),
    (
        "imagePullSecrets merge by name",
        tpl({"imagePullSecrets": [{"name": "b"}]}),
        lambda o: o["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "a"}, {"name": "b"}],
    ),
    (
        "initContainers merge by name like containers",
        tpl({"initContainers": [{"name": "fetch", "image": "x:2"}]}),
        lambda o: o["spec"]["template"]["spec"]["initContainers"]
        == [{"name": "fetch", "image": "x:2", "args": ["pull"]}],
    ),
    (
        "$retainKeys on a volume switches its source",
        tpl({"volumes": [{"name": "models", "$retainKeys": ["name", "emptyDir"], "emptyDir": {}}]}),
        lambda o: o["spec"]["template"]["spec"]["volumes"] == [{"name": "models", "emptyDir": {}}],
    ),
    (
        "$patch: delete on a map removes it",
        {"spec": {"strategy": {"$patch": "delete"}}},
        lambda o: "strategy" not in o["spec"],
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("patch", "check"), [c[1:] for c in SMP_CASES], ids=[c[0] for c in SMP_CASES]
)
def test_strategic_merge_patch_on_deployment(patch: dict[str, Any], check: Any) -> None:
    obj = deployment(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}})
    obj["metadata"]["finalizers"] = ["a"]
    obj["metadata"]["ownerReferences"] = [
        {"uid": "u1", "name": "a", "kind": "X", "apiVersion": "v1"}
    ]
    pod = obj["spec"]["template"]["spec"]
    pod["tolerations"] = [{"key": "old", "operator": "Exists"}]
    pod["imagePullSecrets"] = [{"name": "a"}]
    pod["initContainers"] = [{"name": "fetch", "image": "x:1", "args": ["pull"]}]
    pod["volumes"] = [{"name": "models", "persistentVolumeClaim": {"claimName": "m"}}]
    before = copy.deepcopy(obj)
    assert check(smp(patch, obj))
    assert obj == before


def test_strategic_merge_patch_service_ports_merge_by_port() -> None:
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
           "spec": {"ports": [{"port": 8500, "name": "grpc"}, {"port": 8501, "name": "rest"}]}}  # fmt: skip
    out = smp({"spec": {"ports": [{"port": 8501, "targetPort": 9000}]}}, svc, "v1/Service")
    assert out["spec"]["ports"] == [
        {"port": 8500, "name": "grpc"},
        {"port": 8501, "name": "rest", "targetPort": 9000},
    ]


def test_strategic_merge_patch_pod_conditions_merge_by_type() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "status": {"conditions": [{"type": "Ready", "status": "False"},
                                     {"type": "PodScheduled", "status": "True"}]}}  # fmt: skip
    out = smp({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}, pod, "v1/Pod")
    assert out["status"]["conditions"] == [
        {"type": "Ready", "status": "True"},
        {"type": "PodScheduled", "status": "True"},
    ]


def test_strategic_merge_patch_configmap_data_merges() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}
    out = smp({"data": {"b": "2", "a": None}}, cm, "v1/ConfigMap")
    assert out["data"] == {"b": "2"}


def test_strategic_merge_patch_item_without_merge_key_is_rejected() -> None:
    with pytest.raises(PatchError, match="does not contain declared merge key: name"):
        smp(tpl({"containers": [{"image": "x"}]}))


def test_strategic_merge_patch_refused_for_custom_resources() -> None:
    with pytest.raises(UnsupportedPatch, match="application/merge-patch\\+json"):
        strategic_merge_patch(
            {"spec": {}}, {"spec": {"x": 1}}, "tfleet.dev/v1alpha1/InferenceService"
        )


# ---------------------------------------------------------------------------------------------
# Server-side apply


def apply(
    live: dict[str, Any] | None,
    cfg: dict[str, Any],
    manager: str,
    force: bool = False,
    kind: str = DEPLOYMENT,
    **kw: Any,
) -> dict[str, Any]:
    return server_side_apply(live, cfg, manager, force, kind, now="2026-01-01T00:00:00Z", **kw)


def update(
    old: dict[str, Any] | None, new: dict[str, Any], manager: str, **kw: Any
) -> dict[str, Any]:
    kw.setdefault("kind", DEPLOYMENT)
    return record_update(old, new, manager, now="2026-01-01T00:00:01Z", **kw)


def test_apply_on_create_records_exactly_the_applied_fields() -> None:
    out = apply(None, deployment(), "tfleet", force=True)
    [entry] = out["metadata"]["managedFields"]
    assert {k: entry[k] for k in ("manager", "operation", "apiVersion", "time", "fieldsType")} == {
        "manager": "tfleet",
        "operation": "Apply",
        "apiVersion": "apps/v1",
        "time": "2026-01-01T00:00:00Z",
        "fieldsType": "FieldsV1",
    }
    # The real FieldsV1 layout: struct fields are implied by their children, list items and
    # map keys are members, keys of associative items are JSON with the key fields sorted.
    assert entry["fieldsV1"] == {
        "f:metadata": {"f:labels": {"f:app": {}}},
        "f:spec": {
            "f:replicas": {},
            "f:selector": {},
            "f:template": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:containers": {
                        'k:{"name":"serving"}': {
                            ".": {},
                            "f:args": {},
                            "f:env": {'k:{"name":"A"}': {".": {}, "f:name": {}, "f:value": {}}},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {
                                'k:{"containerPort":8500,"protocol":"TCP"}': {
                                    ".": {},
                                    "f:containerPort": {},
                                    "f:name": {},
                                }
                            },
                        }
                    }
                },
            },
        },
    }
    assert "status" not in out


def test_scale_takes_replicas_and_a_non_forced_apply_conflicts() -> None:
    live = apply(None, deployment(), "tfleet", force=True)
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 5
    scaled = update(live, scaled, "kubectl-scale")
    owners = managers(scaled)
    assert owners[("kubectl-scale", "Update")] == {".spec.replicas"}
    assert ".spec.replicas" not in owners[("tfleet", "Apply")]

    with pytest.raises(ApplyConflict) as info:
        apply(scaled, deployment(), "tfleet")
    assert str(info.value) == (
        'Apply failed with 1 conflict: conflict with "kubectl-scale" using apps/v1: .spec.replicas'
    )
    assert info.value.conflicts == [(".spec.replicas", "kubectl-scale")]
    assert info.value.causes == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "kubectl-scale" using apps/v1',
            "field": ".spec.replicas",
        }
    ]


def test_forced_apply_takes_the_field_back() -> None:
    live = apply(None, deployment(), "tfleet", force=True)
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 5
    scaled = update(live, scaled, "kube-controller-manager")
    out = apply(scaled, deployment(), "tfleet", force=True)
    assert out["spec"]["replicas"] == 2
    owners = managers(out)
    assert ".spec.replicas" in owners[("tfleet", "Apply")]
    assert ("kube-controller-manager", "Update") not in owners, "an emptied manager disappears"


def test_applier_that_stops_setting_replicas_leaves_them_to_the_autoscaler() -> None:
    live = apply(None, deployment(), "tfleet", force=True)
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 7
    scaled = update(live, scaled, "kube-controller-manager")
    cfg = deployment()
    del cfg["spec"]["replicas"]
    out = apply(scaled, cfg, "tfleet", force=True)
    assert out["spec"]["replicas"] == 7
    assert managers(out)[("kube-controller-manager", "Update")] == {".spec.replicas"}


def test_fields_no_longer_applied_are_removed() -> None:
    live = apply(None, deployment(), "tfleet", force=True)
    cfg = deployment()
    cfg["spec"]["template"]["spec"]["containers"][0].pop("args")
    cfg["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy"})
    out = apply(live, cfg, "tfleet", force=True)
    assert "args" not in container(out)
    out2 = apply(out, deployment(), "tfleet", force=True)
    assert [c["name"] for c in out2["spec"]["template"]["spec"]["containers"]] == ["serving"]
    assert container(out2)["args"] == ["--port=8500"]


def test_a_field_shared_with_another_manager_survives_its_removal() -> None:
    helm_cfg = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                "data": {"shared": "1", "mine": "x"}}  # fmt: skip
    live = apply(None, helm_cfg, "helm", kind="v1/ConfigMap")
    other = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c"},
        "data": {"shared": "1"},
    }
    live = apply(live, other, "other", kind="v1/ConfigMap")
    owners = managers(live)
    assert (
        ".data.shared" in owners[("helm", "Apply")] and ".data.shared" in owners[("other", "Apply")]
    )
    out = apply(live, {**helm_cfg, "data": {}}, "helm", kind="v1/ConfigMap")
    assert out["data"] == {"shared": "1"}, "helm's own field goes, the shared one stays"


def test_two_appliers_with_the_same_value_share_without_conflict() -> None:
    live = apply(None, deployment(), "helm")
    out = apply(live, {"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": "resnet"}, "spec": {"replicas": 2}}, "tfleet")  # fmt: skip
    owners = managers(out)
    assert ".spec.replicas" in owners[("helm", "Apply")]
    assert owners[("tfleet", "Apply")] == {".spec.replicas"}


def test_conflicts_with_an_applier_are_named_without_version_and_listed_by_manager() -> None:
    live = apply(None, deployment(), "helm")
    cfg = deployment(replicas=3)
    cfg["spec"]["template"]["spec"]["containers"][0]["image"] = "x:1"
    with pytest.raises(ApplyConflict) as info:
        apply(live, cfg, "kubectl")
    assert str(info.value) == (
        'Apply failed with 2 conflicts: conflicts with "helm":\n'
        "- .spec.replicas\n"
        '- .spec.template.spec.containers[name="serving"].image'
    )


def test_user_annotation_on_a_child_survives_the_operator_reapply() -> None:
    live = apply(None, deployment(), "tfleet", force=True)
    annotated = copy.deepcopy(live)
    annotated["metadata"]["annotations"] = {"note": "hi"}
    annotated = update(live, annotated, "kubectl-annotate")
    assert managers(annotated)[("kubectl-annotate", "Update")] == {
        ".metadata.annotations",
        ".metadata.annotations.note",
    }
    out = apply(annotated, deployment(), "tfleet", force=True)
    assert out["metadata"]["annotations"] == {"note": "hi"}


def test_status_is_ignored_on_the_main_resource_and_applied_on_the_subresource() -> None:
    cfg = deployment()
    cfg["status"] = {"replicas": 9}
    out = apply(None, cfg, "tfleet")
    assert "status" not in out
    assert not any(".status" in p for p in managers(out)[("tfleet", "Apply")])

    status_cfg = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "resnet"},
                  "spec": {"replicas": 100}, "status": {"replicas": 2}}  # fmt: skip
    out2 = apply(out, status_cfg, "ctrl", subresource="status")
    assert out2["status"] == {"replicas": 2}
    assert out2["spec"]["replicas"] == 2, "spec is not writable through /status"
    [entry] = [e for e in out2["metadata"]["managedFields"] if e["manager"] == "ctrl"]
    assert entry["subresource"] == "status"
    assert entry["fieldsV1"] == {"f:status": {"f:replicas": {}}}


def test_server_owned_metadata_is_never_owned() -> None:
    cfg = deployment()
    cfg["metadata"].update(resourceVersion="5", uid="u", generation=3, managedFields=[{"x": 1}])
    out = apply(None, cfg, "tfleet")
    owned = managers(out)[("tfleet", "Apply")]
    assert not any(p.startswith(".metadata.") and "labels" not in p for p in owned)


def test_no_op_apply_keeps_the_entry_time() -> None:
    live = apply(None, deployment(), "tfleet")
    again = server_side_apply(
        live, deployment(), "tfleet", False, DEPLOYMENT, now="2030-01-01T00:00:00Z"
    )
    assert again["metadata"]["managedFields"][0]["time"] == "2026-01-01T00:00:00Z"
    assert {k: v for k, v in again.items() if k != "metadata"} == {
        k: v for k, v in live.items() if k != "metadata"
    }


def test_first_apply_on_an_untracked_object_leaves_existing_fields_to_before_first_apply() -> None:
    live = deployment()
    out = apply(live, {"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": "resnet"}, "spec": {"replicas": 3}}, "kubectl", force=True)  # fmt: skip
    owners = managers(out)
    assert owners[("kubectl", "Apply")] == {".spec.replicas"}
    assert (
        '.spec.template.spec.containers[name="serving"].image'
        in owners[("before-first-apply", "Update")]
    )
    assert out["spec"]["replicas"] == 3


def test_custom_resource_lists_are_atomic_unless_the_schema_says_map() -> None:
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "args": {"type": "array", "items": {"type": "string"}},
        "steps": {"type": "array", "x-kubernetes-list-type": "map",
                  "x-kubernetes-list-map-keys": ["weight"],
                  "items": {"type": "object", "properties": {"weight": {"type": "integer"},
                                                             "pause": {"type": "string"}}}},
    }}}}  # fmt: skip
    cr = {"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "x"},
          "spec": {"args": ["a"], "steps": [{"weight": 10, "pause": "1m"}]}}  # fmt: skip
    out = apply(None, cr, "kubectl", kind="tfleet.dev/v1alpha1/InferenceService", schema=schema)
    assert managers(out)[("kubectl", "Apply")] == {
        ".spec.args",
        ".spec.steps[weight=10]",
        ".spec.steps[weight=10].weight",
        ".spec.steps[weight=10].pause",
    }
    other = {"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "x"},
             "spec": {"steps": [{"weight": 50, "pause": "2m"}]}}  # fmt: skip
    out2 = apply(out, other, "ops", kind="tfleet.dev/v1alpha1/InferenceService", schema=schema)
    assert [s["weight"] for s in out2["spec"]["steps"]] == [10, 50], "map items from both managers"


def test_schemaless_custom_resource_maps_merge_granularly() -> None:
    cr = {"apiVersion": "x.dev/v1", "kind": "Thing", "metadata": {"name": "x"}, "spec": {"a": 1}}
    out = apply(None, cr, "one", kind="x.dev/v1/Thing")
    out = apply(out, {**cr, "spec": {"b": 2}}, "two", kind="x.dev/v1/Thing")
    assert out["spec"] == {"a": 1, "b": 2}


def test_applied_items_follow_the_applied_order_and_keep_others_in_place() -> None:
    live = apply(None, deployment(), "tfleet")
    user = copy.deepcopy(live)
    user["spec"]["template"]["spec"]["containers"].insert(0, {"name": "debug", "image": "busybox"})
    user = update(live, user, "kubectl-edit")
    cfg = deployment()
    cfg["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy"})
    out = apply(user, cfg, "tfleet")
    names = [c["name"] for c in out["spec"]["template"]["spec"]["containers"]]
    assert names == ["debug", "serving", "sidecar"]


# ---------------------------------------------------------------------------------------------
# record_update: ownership for create, update and patch


def test_create_owns_everything_with_inner_members_marked() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "b"}},
          "data": {"k": "v"}}  # fmt: skip
    out = record_update(None, cm, "kubectl-create", kind="v1/ConfigMap", now="T")
    [entry] = out["metadata"]["managedFields"]
    assert entry["operation"] == "Update" and entry["time"] == "T"
    assert entry["fieldsV1"] == {
        "f:data": {".": {}, "f:k": {}},
        "f:metadata": {"f:labels": {".": {}, "f:a": {}}},
    }


def test_create_of_a_deployment_matches_the_zero_value_layout() -> None:
    out = record_update(None, deployment(), "kubectl-create", kind=DEPLOYMENT, now="T")
    fields = out["metadata"]["managedFields"][0]["fieldsV1"]
    # spec, template and its spec exist in the zero value, containers is a non-omitempty
    # slice: none carries ".", while a newly added map such as labels does.
    assert "." not in fields["f:spec"]
    assert "." not in fields["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert "." in fields["f:spec"]["f:template"]["f:metadata"]["f:labels"]
    assert "." in fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"serving"}']


def test_update_moves_ownership_of_changed_fields_only() -> None:
    live = apply(None, deployment(), "helm")
    new = copy.deepcopy(live)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "x:2"
    out = update(live, new, "kubectl-edit")
    owners = managers(out)
    image = '.spec.template.spec.containers[name="serving"].image'
    assert owners[("kubectl-edit", "Update")] == {image}
    assert image not in owners[("helm", "Apply")]
    assert ".spec.replicas" in owners[("helm", "Apply")]


def test_update_that_changes_nothing_adds_no_manager() -> None:
    live = apply(None, deployment(), "helm")
    out = update(live, copy.deepcopy(live), "noop")
    assert ("noop", "Update") not in managers(out)


def test_removed_fields_leave_their_owner() -> None:
    live = apply(None, deployment(), "helm")
    new = copy.deepcopy(live)
    del new["metadata"]["labels"]
    out = update(live, new, "kubectl-edit")
    assert not any("labels" in p and "template" not in p for p in managers(out)[("helm", "Apply")])


def test_managed_fields_sent_by_the_client_replace_the_stored_ones() -> None:
    live = apply(None, deployment(), "helm")
    new = copy.deepcopy(live)
    new["metadata"]["managedFields"] = [{}]
    new["spec"]["replicas"] = 4
    out = update(live, new, "kubectl-edit")
    assert set(managers(out)) == {("kubectl-edit", "Update")}, "[{}] resets the history"
    kept = copy.deepcopy(live)
    kept["metadata"]["managedFields"] = []
    kept["spec"]["replicas"] = 4
    out2 = update(live, kept, "kubectl-edit")
    assert ("helm", "Apply") in managers(out2), "an empty list keeps the stored entries"


def test_status_writes_are_owned_per_subresource() -> None:
    live = apply(None, deployment(), "tfleet")
    new = copy.deepcopy(live)
    new["status"] = {"readyReplicas": 2}
    out = update(live, new, "kube-controller-manager", subresource="status")
    [entry] = [
        e for e in out["metadata"]["managedFields"] if e["manager"] == "kube-controller-manager"
    ]
    assert entry["subresource"] == "status"
    assert entry["fieldsV1"] == {"f:status": {"f:readyReplicas": {}}}


# ---------------------------------------------------------------------------------------------
# FieldsV1 encoding


def test_fields_v1_round_trip() -> None:
    fields = {
        "f:metadata": {"f:finalizers": {".": {}, 'v:"a"': {}}},
        "f:spec": {"f:ports": {'k:{"port":80,"protocol":"TCP"}': {".": {}, "f:port": {}}}},
    }
    paths = decode_fields(fields)
    assert {path_string(p) for p in paths} == {
        ".metadata.finalizers",
        '.metadata.finalizers[="a"]',
        '.spec.ports[port=80,protocol="TCP"]',
        '.spec.ports[port=80,protocol="TCP"].port',
    }
    assert encode_fields(paths) == fields


def test_first_status_write_on_a_builtin_does_not_own_the_status_struct() -> None:
    live = apply(None, deployment(), "tfleet")
    new = copy.deepcopy(live)
    new["status"] = {"replicas": 2}
    out = update(live, new, "kube-controller-manager", subresource="status")
    [entry] = [
        e for e in out["metadata"]["managedFields"] if e["manager"] == "kube-controller-manager"
    ]
    assert entry["fieldsV1"] == {"f:status": {"f:replicas": {}}}
    assert out["status"] == {"replicas": 2}
    assert "strategy" not in out["spec"], "the zero value shapes ownership, not the object"


def test_an_item_the_applier_drops_goes_even_if_another_manager_changed_a_field_of_it() -> None:
    cfg = deployment()
    cfg["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy:1"})
    live = apply(None, cfg, "tfleet")
    edited = copy.deepcopy(live)
    edited["spec"]["template"]["spec"]["containers"][1]["image"] = "envoy:2"
    edited = update(live, edited, "kubectl-edit")
    out = apply(edited, deployment(), "tfleet")
    # The item itself was only ever the applier's: structured-merge-diff removes it whole.
    assert [c["name"] for c in out["spec"]["template"]["spec"]["containers"]] == ["serving"]
    assert ("kubectl-edit", "Update") not in managers(out)


def test_a_struct_the_applier_drops_keeps_fields_another_manager_owns() -> None:
    cfg = deployment(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}})
    live = apply(None, cfg, "tfleet")
    edited = copy.deepcopy(live)
    edited["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = 0
    edited = update(live, edited, "kubectl-edit")
    out = apply(edited, deployment(), "tfleet")
    assert out["spec"]["strategy"] == {"rollingUpdate": {"maxUnavailable": 0}}


def test_custom_resources_have_the_real_object_meta() -> None:
    # Whatever the CRD schema says of metadata, finalizers merge as a set and owner
    # references by uid, as on the apiserver.
    schema = {"type": "object", "properties": {"spec": {"type": "object"}}}
    kind = "tfleet.dev/v1alpha1/InferenceService"
    cr = {"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService",
          "metadata": {"name": "x", "finalizers": ["a"]}}  # fmt: skip
    live = apply(None, cr, "one", kind=kind, schema=schema)
    out = apply(
        live,
        {**cr, "metadata": {"name": "x", "finalizers": ["b"]}},
        "two",
        kind=kind,
        schema=schema,
    )
    assert out["metadata"]["finalizers"] == ["a", "b"]
    assert managers(out)[("two", "Apply")] == {'.metadata.finalizers[="b"]'}
    schemaless = apply(None, cr, "one", kind="x.dev/v1/Thing")
    assert managers(schemaless)[("one", "Apply")] == {'.metadata.finalizers[="a"]'}
