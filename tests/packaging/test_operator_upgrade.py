"""An operator "upgrade" (the same operator with a new health bridge image, as a new release
brings) starts no rollout: running revisions keep their pods, new revisions get the new image."""

from __future__ import annotations

import time

import pytest

from tests.packaging.cluster import Operator, PrivateCluster, isvc, wait_for

OLD, NEW = "ghcr.io/tfleet/tfleet:0.1.0", "ghcr.io/tfleet/tfleet:0.2.0"


def bridge_images(cluster: PrivateCluster, ns: str) -> dict[str, str]:
    out = {}
    for d in cluster.get("deployments", "-n", ns)["items"]:
        (bridge,) = [c for c in d["spec"]["template"]["spec"]["initContainers"] if c["name"] == "health-bridge"]
        out[d["metadata"]["name"]] = bridge["image"]
    return out


def test_a_new_bridge_image_rolls_nothing_until_the_next_revision(private_cluster: PrivateCluster,
                                                                  monkeypatch: pytest.MonkeyPatch):
    cluster = private_cluster
    ns = cluster.namespace("upgrade")
    monkeypatch.setenv("TFLEET_BRIDGE_IMAGE", OLD)
    old = Operator(cluster, "before-upgrade", "--all-namespaces")
    try:
        cluster.apply(*(isvc(f"m{i}", ns, replicas=1) for i in range(3)))
        cluster.kubectl("wait", "--for=condition=RolledOut", "tfis", "--all", "-n", ns, "--timeout=60s")
    finally:
        assert old.terminate() == 0
        old.stop()
    before = bridge_images(cluster, ns)
    assert set(before.values()) == {OLD}

    monkeypatch.setenv("TFLEET_BRIDGE_IMAGE", NEW)
    new = Operator(cluster, "after-upgrade", "--all-namespaces")
    try:
        new.wait_for_log("Started the operator")
        time.sleep(3)  # every InferenceService has been reconciled by now
        assert new.metric("tfleet_api_writes_total", verb="apply", kind="Deployment") == 0
        phases = {i["metadata"]["name"]: i["status"]["rollout"]["phase"] for i in cluster.get("tfis", "-n", ns)["items"]}
        assert set(phases.values()) <= {"Idle", "Succeeded"}, phases
        assert bridge_images(cluster, ns) == before

        bumped = isvc("m0", ns, replicas=1)
        bumped["spec"]["model"]["version"] = 2
        cluster.apply(bumped)
        wait_for(lambda: len(bridge_images(cluster, ns)) == 4, what="the new revision's Deployment")
        images = bridge_images(cluster, ns)
        assert [name for name, image in images.items() if image == NEW] == \
            [name for name in images if name not in before], images
    finally:
        new.stop()
