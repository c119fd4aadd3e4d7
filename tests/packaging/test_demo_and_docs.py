"""`make demo` applies what it renders: its manifests, applied to a local control plane with
the operator running, become the revisions `tfleet render` printed for the same files. And
the messages the docs quote are the ones the API server and `tfleet render` give."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e import demo, demo_serving
from e2e.render import render, revisions_of

from tests.packaging.cluster import Operator, PrivateCluster, wait_for


@pytest.fixture(scope="module")
def operator(private_cluster: PrivateCluster) -> Iterator[Operator]:
    op = Operator(private_cluster, "demo")
    try:
        op.wait_for_log("Started the operator")
        yield op
    finally:
        op.stop()


def rollout(cluster: PrivateCluster, namespace: str, name: str) -> dict[str, Any]:
    body = cluster.get("tfis", name, "-n", namespace)
    return dict((body.get("status") or {}).get("rollout") or {})


def test_the_examples_are_applied_unchanged_and_run_the_rendered_revisions(private_cluster, operator, monkeypatch):
    cluster = private_cluster
    cluster.namespace(demo.NAMESPACE)
    applied: list[tuple[str, ...]] = []
    real_run = demo.run

    def recording_run(*args: str, input: str | None = None, check: bool = True) -> str:
        applied.append(args)
        return real_run(*args, input=input, check=check)

    monkeypatch.setattr(demo, "run", recording_run)
    kubectl = [str(demo.KUBECTL), "--kubeconfig", str(cluster.kubeconfig)]
    demo.apply_examples(kubectl)
    # Each example is applied from its file, as it is; only the claim it needs comes first.
    files = [a[a.index("-f") + 1] for a in applied if "-f" in a and a[a.index("-f") + 1] != "-"]
    assert files == [str(p.relative_to(demo.ROOT)) for p in sorted((demo.ROOT / "examples").glob("*.yaml"))]
    assert cluster.get("pvc", "model-store", "-n", demo.NAMESPACE)["metadata"]["name"] == "model-store"

    rendered = {name: rev for path in demo.EXAMPLES for name, rev in revisions_of(render(path)).items()}
    assert "bert-batched" in rendered  # the example whose model is on pvc://model-store/bert
    wait_for(lambda: demo.applied_revisions(kubectl) == rendered, timeout=60,
             what=f"the operator to roll out the rendered revisions {rendered}")
    demo.check_revisions(rendered, demo.applied_revisions(kubectl))


def test_the_serving_demo_applies_the_files_it_renders(private_cluster, operator, tmp_path: Path):
    cluster = private_cluster
    cluster.namespace(demo_serving.NAMESPACE)
    for version in (1, 2):
        path = tmp_path / f"v{version}.yaml"
        path.write_text(yaml.safe_dump(demo_serving.manifest(version), sort_keys=False))
        revision = revisions_of(render(path))[demo_serving.NAME]
        cluster.kubectl("apply", "-f", str(path))

        def rolled_out(expected: str = revision) -> bool:
            ro = rollout(cluster, demo_serving.NAMESPACE, demo_serving.NAME)
            return expected in (ro.get("canaryRevision"), ro.get("stableRevision"))

        wait_for(rolled_out, timeout=60, what=f"revision {revision} of {path.name}")
    deployments = json.loads(cluster.kubectl("get", "deployments", "-n", demo_serving.NAMESPACE, "-o", "json").stdout)
    names = {d["metadata"]["name"] for d in deployments["items"]}
    assert {f"{demo_serving.NAME}-{revisions_of(render(tmp_path / f'v{v}.yaml'))[demo_serving.NAME]}"
            for v in (1, 2)} <= names


def test_troubleshooting_quotes_the_admission_message_kubectl_prints(private_cluster, tmp_path: Path):
    doc = (demo.ROOT / "docs" / "troubleshooting.md").read_text()
    (quoted,) = re.findall(r'^The InferenceService "bert-batched" is invalid: .*$', doc, re.M)
    (render_quote,) = re.findall(r"^`tfleet render -f` words the same rule with the numbers, before anything is "
                                 r"applied:\n`([^`]+)`", doc, re.M)
    bad = yaml.safe_load((demo.ROOT / "examples" / "batching.yaml").read_text())
    bad["spec"]["batching"]["allowedBatchSizes"] = [8, 16]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    private_cluster.namespace(bad["metadata"]["namespace"])
    refused = private_cluster.kubectl("apply", "-f", str(path), check=False)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [quoted], refused.stderr
    rendered = subprocess.run([sys.executable, "-m", "tfleet.cli", "render", "-f", str(path)], capture_output=True,
                              text=True, timeout=60)
    assert rendered.returncode == 2 and render_quote in rendered.stderr, rendered.stderr
