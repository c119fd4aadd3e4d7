"""The bad manifests of tests/corpus/bad against a cluster: each is refused at the layer its
header names, and none of them crashes the operator or makes it loop.

- `admission`: `kubectl apply` is refused by the API server (the CRD's schema and CEL rules,
  or its own metadata rules), and the refusal names the field, in the CEL rule's words where
  the header gives them.
- `operator`: the API server stores the object; the running operator marks it Ready=False,
  reason InvalidSpec, naming the field, while a valid InferenceService beside them still
  reconciles, and it does not keep writing to the bad ones.
- `client`: kubectl refuses the YAML itself; nothing is stored.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from tests.corpus.catalogue import BadManifest, corpus

from e2e.tests import waiting

CORPUS = corpus()
VALID_NAME = "valid-beside-the-bad"
VALID = f"""apiVersion: tfleet.dev/v1alpha1
kind: InferenceService
metadata:
  name: {VALID_NAME}
spec:
  model:
    basePath: gs://bucket/models/half_plus_two
    version: 1
"""
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def by_layer(layer: str) -> list[BadManifest]:
    return [bad for bad in CORPUS if bad.layer == layer]


def object_names(bad: BadManifest) -> list[str]:
    """metadata.name of every document of the file."""
    return re.findall(r"^metadata:\n  name: (.+)$", bad.path.read_text(), re.M)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    return waiting.wait_for(predicate, timeout, what, interval=0.25)


def stored(kubectl: Callable[..., Any], namespace: str) -> dict[str, dict[str, Any]]:
    items = json.loads(kubectl("get", "tfis", "-n", namespace, "-o", "json").stdout)["items"]
    return {item["metadata"]["name"]: item for item in items}


def ready_condition(obj: dict[str, Any]) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == "Ready":
            return cond  # type: ignore[no-any-return]
    return {}


def test_admission_refuses_every_admission_layer_manifest_naming_the_field(kubectl, namespace, tfleet_crd):
    # One kubectl run over all files (but those that ask for a server-side apply): kubectl goes
    # on after a refused object and prints one error per object, each naming its file.
    bads = by_layer("admission")
    args = [arg for bad in bads if not bad.server_side for arg in ("-f", str(bad.path))]
    result = kubectl("apply", "-n", namespace, *args, check=False)
    assert result.returncode != 0
    errors: dict[str, str] = {}
    for line in result.stderr.splitlines():
        match = re.search(r'error when (?:creating|retrieving current configuration of|patching) "([^"]+)"', line)
        if match:
            errors.setdefault(match.group(1), "")
            errors[match.group(1)] += line + "\n"
    for bad in bads:
        if bad.server_side:
            # One file a run: a server-side apply's error does not name the file.
            result = kubectl("apply", "--server-side", "-n", namespace, "-f", str(bad.path), check=False)
            if result.returncode != 0:
                errors[str(bad.path)] = result.stderr
    problems = []
    for bad in bads:
        err = errors.get(str(bad.path))
        if err is None:
            problems.append(f"{bad.name}: not refused")
            continue
        # The API server words its messages its own way; the field path is what must match.
        for path in bad.admission_fields or bad.fields:
            if path not in err:
                problems.append(f"{bad.name}: the refusal does not name {path}: {err.strip()[:600]}")
        for words in bad.admission_expects:
            if words not in err:
                problems.append(f"{bad.name}: the refusal does not say {words!r}: {err.strip()[:600]}")
    stored_names = set(stored(kubectl, namespace))
    refused = {name for bad in bads for name in object_names(bad)[bad.document:bad.document + 1]}
    assert not stored_names & refused, f"stored although refused: {sorted(stored_names & refused)}"
    assert "multi-valid" in stored_names, "the valid document beside a refused one was not stored"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("bad", by_layer("client"), ids=lambda b: b.name)
def test_kubectl_refuses_the_yaml_itself(kubectl, namespace, tfleet_crd, bad):
    result = kubectl("apply", "-n", namespace, "-f", str(bad.path), check=False, timeout=60)
    assert result.returncode != 0
    assert "yaml" in result.stderr.lower(), result.stderr[-1000:]
    assert stored(kubectl, namespace) == {}


@pytest.mark.simulated  # ModelAvailable on the simulated kubelet; writes counted in the request log
def test_the_operator_marks_operator_layer_manifests_invalid_and_keeps_serving_the_valid_one(
    kubectl, namespace, operator_process, local_cluster
):
    bads = by_layer("operator")
    names = {object_names(bad)[bad.document]: bad for bad in bads}
    kubectl("apply", "-n", namespace, "-f", "-", input=VALID)
    for bad in bads:
        # Each is admitted: only the operator can tell that it is wrong. `create`, not
        # `apply`: apply copies the whole object into its last-applied annotation, which
        # would push the 300 KiB of pod annotations over the API server's own limit.
        kubectl("create", "-n", namespace, "-f", str(bad.path))

    unmarked: dict[str, dict[str, Any]] = {}

    def all_marked() -> dict[str, dict[str, Any]] | None:
        objects = stored(kubectl, namespace)
        conds = {name: ready_condition(objects.get(name, {})) for name in names}
        unmarked.clear()
        unmarked.update({names[n].name: c for n, c in conds.items() if c.get("reason") != "InvalidSpec"})
        return None if unmarked else conds

    try:
        conditions = wait_for(all_marked, 45, "Ready=False reason InvalidSpec on every operator-layer manifest")
    except AssertionError:
        raise AssertionError(f"not marked InvalidSpec: {unmarked}") from None
    problems = []
    for name, bad in names.items():
        cond = conditions[name]
        if cond["status"] != "False":
            problems.append(f"{bad.name}: Ready is {cond['status']}")
        for expect in bad.expects:
            if expect not in cond.get("message", ""):
                problems.append(f"{bad.name}: {expect!r} not in the Ready message {cond.get('message')!r}")
    assert not problems, "\n".join(problems)

    kubectl("wait", "--for=condition=ModelAvailable", f"tfis/{VALID_NAME}", "-n", namespace, "--timeout=45s")
    deployments = json.loads(kubectl("get", "deployments", "-n", namespace, "-o", "json").stdout)["items"]
    owners = {ref["name"] for dep in deployments for ref in dep["metadata"].get("ownerReferences", [])}
    assert owners == {VALID_NAME}, f"Deployments of {sorted(owners)}: only the valid one may have one"
    assert operator_process.proc is not None and operator_process.proc.poll() is None, "the operator exited"

    # Idle: nothing changes, so the operator has nothing to write about the bad objects (a
    # retry of a refused child or a status rewritten on every pass would show here).
    time.sleep(1.0)
    start = len(local_cluster.request_log)
    time.sleep(3.0)
    writes = [
        r for r in local_cluster.request_log[start:]
        if r["namespace"] == namespace and r["method"] in WRITE_METHODS
        and r["user_agent"].startswith("tfleet/operator") and (r["name"] or "").startswith(tuple(names))
    ]
    assert writes == [], f"{len(writes)} writes for the bad objects while idle: {writes[:5]}"
    assert operator_process.proc.poll() is None, "the operator exited"
    assert "Traceback" not in operator_process.log()
