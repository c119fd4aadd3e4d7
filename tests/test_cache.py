"""What the fleet cache keeps: interned, shared with the version before, equal to what came."""

from __future__ import annotations

import copy
import json

from tfleet.runtime.cache import FleetCache, compact


def deployment(rv: str, ready: int) -> dict:
    # Decoded from JSON, as a watch event is: every string its own object.
    return json.loads(json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "resnet-0a1b2c3d4e", "namespace": "ml", "resourceVersion": rv, "uid": "d-uid",
                     "labels": {"app.kubernetes.io/managed-by": "tfleet", "tfleet.dev/inferenceservice": "resnet"},
                     "managedFields": [{"manager": "tfleet", "fieldsV1": {"f:spec": {}}}]},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "tfserving", "image": "tf:2"}]}}},
        "status": {"readyReplicas": ready, "conditions": [{"type": "Available", "status": "True"}]},
    }))


def test_a_kept_object_equals_what_came():
    came = deployment("5", 1)
    kept = compact(came)
    assert kept == came  # compact keeps every field: the cache drops managedFields before it
    assert compact(copy.deepcopy(came), kept) == came


def test_strings_are_interned_across_objects_and_unchanged_parts_shared_with_the_version_before():
    first, second = compact(deployment("5", 1)), compact(deployment("6", 1))
    # The same key and value strings, one object each, whichever object they came in.
    assert next(iter(first["spec"]["template"]["spec"]["containers"][0])) is \
        next(iter(second["spec"]["template"]["spec"]["containers"][0]))
    assert first["metadata"]["name"] is second["metadata"]["name"]
    later = compact(deployment("7", 2), first)
    assert later["spec"] is first["spec"]  # unchanged: the version before's
    assert later["metadata"]["labels"] is first["metadata"]["labels"]
    assert later["status"] is not first["status"] and later["status"]["readyReplicas"] == 2
    assert later["status"]["conditions"] is first["status"]["conditions"]
    assert later["metadata"]["resourceVersion"] == "7"


def test_a_scalar_of_another_type_is_never_taken_from_the_version_before():
    before = compact({"spec": {"replicas": 1, "paused": True}})
    after = compact({"spec": {"replicas": True, "paused": 1}}, before, fresh=("spec",))  # 1 == True in Python
    assert type(after["spec"]["replicas"]) is bool and type(after["spec"]["paused"]) is int
    flat = compact({"weight": True}, compact({"weight": 1}))
    assert type(flat["weight"]) is bool


def test_an_inference_services_schemaless_affinity_changing_only_its_types_is_seen():
    cache = FleetCache()
    body = {"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": "resnet", "namespace": "ml", "resourceVersion": "1", "generation": 1},
            "spec": {"pod": {"affinity": {"nodeAffinity": {"preferred": [{"weight": 1}]}}}}}
    cache.observe_isvc("ADDED", body)
    edited = copy.deepcopy(body)
    edited["metadata"].update(resourceVersion="2", generation=2)
    edited["spec"]["pod"]["affinity"]["nodeAffinity"]["preferred"][0]["weight"] = True  # 1 == True
    cache.observe_isvc("MODIFIED", edited)
    kept, _ = cache.snapshot(("ml", "resnet"))
    assert kept is not None and kept["spec"]["pod"]["affinity"]["nodeAffinity"]["preferred"][0]["weight"] is True


def test_the_cache_keeps_children_compact_and_without_managed_fields():
    cache = FleetCache()
    cache.observe_child("ADDED", deployment("5", 1))
    cache.observe_child("MODIFIED", deployment("6", 2))
    _, children = cache.snapshot(("ml", "resnet"))
    kept = children[("Deployment", "resnet-0a1b2c3d4e")]
    assert "managedFields" not in kept["metadata"]
    assert kept["status"]["readyReplicas"] == 2 and kept["metadata"]["resourceVersion"] == "6"
