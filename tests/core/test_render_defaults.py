"""`tfleet render --defaults FILE`: the objects the operator applies under the cluster's
InferenceServiceDefaults, offline, and the errors for a bad defaults file."""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tfleet.api.defaults import parse_defaults_object
from tfleet.api.vocabulary import ANNOTATION_APPLIED, ANNOTATION_REVISION_SPEC
from tfleet.engine import plan

from .isvc_factory import EXAMPLE_FILES, REPO
from .test_cli import tfleet

DEFAULTS = REPO / "examples" / "platform" / "defaults.yaml"


def as_rendered(applied: dict[str, Any]) -> dict[str, Any]:
    """An applied child without what only the operator adds (owner, its own bookkeeping)."""
    out = copy.deepcopy(applied)
    meta = out["metadata"]
    meta.pop("ownerReferences", None)
    annotations = meta.get("annotations") or {}
    for key in (ANNOTATION_APPLIED, ANNOTATION_REVISION_SPEC):
        annotations.pop(key, None)
    if "annotations" in meta and not annotations:
        del meta["annotations"]
    return out


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.stem for p in EXAMPLE_FILES])
def test_render_with_defaults_prints_what_the_operator_applies(path: Path) -> None:
    result = tfleet("render", "--defaults", str(DEFAULTS), "-f", str(path))
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    defaults = parse_defaults_object(yaml.safe_load(DEFAULTS.read_text()))
    applied = []
    for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
        doc["metadata"].setdefault("uid", "u")
        parsed = plan.parse_once(doc, defaults)
        assert parsed.isvc is not None, parsed.invalid
        applied += [as_rendered(m) for m in plan.plan_children(doc, {}, [], datetime(2026, 1, 1), parsed=parsed).apply]
    assert rendered == applied
    for obj in rendered:
        kubernetes_validate.validate(obj, "1.35", strict=True)
    # And the defaults show: the mirror, the platform's label, its pull secret.
    (deployment,) = [o for o in rendered if o["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    assert template["spec"]["containers"][0]["image"].startswith("registry.example.com/dockerhub/")
    assert template["metadata"]["labels"]["example.com/cost-center"] == "ml-platform"
    assert {"name": "registry-example-com"} in template["spec"]["imagePullSecrets"]


def test_without_defaults_nothing_of_them_shows() -> None:
    result = tfleet("render", "-f", "examples/basic-cpu.yaml")
    assert result.returncode == 0 and "registry.example.com" not in result.stdout
    with_defaults = tfleet("render", "--defaults", str(DEFAULTS), "-f", "examples/basic-cpu.yaml")
    assert with_defaults.returncode == 0 and with_defaults.stdout != result.stdout


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "defaults.yaml"
    path.write_text(text)
    return path


HEAD = "apiVersion: tfleet.dev/v1alpha1\nkind: InferenceServiceDefaults\nmetadata: {name: cluster}\n"

BAD_DEFAULTS = [
    pytest.param(HEAD + "spec:\n  image: {gpuTag: '2.18.0'}\n  rollout: {progressDeadlineSeconds: 0}\n",
                 ['spec.image.gpuTag: "2.18.0" is not a GPU tag: use a tag ending in -gpu (for example 2.19.0-gpu), '
                  "or a repository whose name contains gpu",
                  "spec.rollout.progressDeadlineSeconds: must be greater than or equal to 1, got 0"],
                 id="two invalid fields"),
    pytest.param(HEAD + "spec: {imge: {}}\n",
                 ["spec.imge: unknown field (known fields: image, gpu, resources, rollout, pod, healthBridge)"],
                 id="a misspelt field"),
    pytest.param("apiVersion: tfleet.dev/v1alpha1\nkind: InferenceServiceDefaults\nmetadata: {name: mine}\nspec: {}\n",
                 ["metadata.name: must be \"cluster\", got 'mine': tfleet reads the one InferenceServiceDefaults named cluster"],
                 id="another name"),
    pytest.param(HEAD + "spec: {}\n---\n" + HEAD + "spec: {}\n",
                 ["must hold one InferenceServiceDefaults document, holds 2 documents"], id="two documents"),
    pytest.param(HEAD + "spec: [\n", None, id="YAML that does not parse"),
]


@pytest.mark.parametrize(("text", "messages"), BAD_DEFAULTS)
def test_a_bad_defaults_file_is_refused_naming_the_flag_and_the_field(tmp_path: Path, text: str,
                                                                       messages: list[str] | None) -> None:
    path = write(tmp_path, text)
    result = tfleet("render", "--defaults", str(path), "-f", "examples/basic-cpu.yaml")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert all(line.startswith(f"error: --defaults: {path}: ") for line in lines), lines
    if messages is None:
        assert "YAML does not parse" in result.stderr and "Traceback" not in result.stderr
    else:
        assert lines == [f"error: --defaults: {path}: {m}" for m in messages]


def test_a_missing_defaults_file_is_named(tmp_path: Path) -> None:
    result = tfleet("render", "--defaults", str(tmp_path / "nope.yaml"), "-f", "examples/basic-cpu.yaml")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: --defaults: {tmp_path / 'nope.yaml'}: cannot read: No such file or directory"]


def test_defaults_among_the_documents_are_checked_printed_and_not_applied(tmp_path: Path) -> None:
    # A GitOps directory holds the defaults beside the services: they render whole, the
    # defaults unchanged, and a note says that --defaults applies them.
    (tmp_path / "a-defaults.yaml").write_text(DEFAULTS.read_text())
    (tmp_path / "b-service.yaml").write_text((REPO / "examples/basic-cpu.yaml").read_text())
    result = tfleet("render", "-f", str(tmp_path), "-o", "name")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "inferenceservicedefaults.tfleet.dev/cluster"
    assert "deployment.apps/" in result.stdout
    assert result.stderr.splitlines() == [
        f"note: {tmp_path / 'a-defaults.yaml'}: document 0: the InferenceServiceDefaults is printed as it is, "
        "not applied to the InferenceServices: render with --defaults FILE for that"]
    plain = tfleet("render", "-f", str(tmp_path / "b-service.yaml"))
    listed = tfleet("render", "-f", str(tmp_path))
    assert [d for d in yaml.safe_load_all(listed.stdout) if d][1:] == [d for d in yaml.safe_load_all(plain.stdout) if d]
    # An invalid one among them is an error like any invalid document.
    (tmp_path / "a-defaults.yaml").write_text(HEAD + "spec: {pod: {priorityClassName: Bad}}\n")
    bad = tfleet("render", "-f", str(tmp_path))
    assert bad.returncode == 2
    assert "a-defaults.yaml: document 0: spec.pod.priorityClassName:" in bad.stderr


def test_tfleet_crd_prints_either_crd() -> None:
    result = tfleet("crd", "--kind", "InferenceServiceDefaults", "-o", "name")
    assert result.returncode == 0 and result.stdout == "customresourcedefinition.apiextensions.k8s.io/" \
        "inferenceservicedefaults.tfleet.dev\n"
    assert tfleet("crd", "-o", "name").stdout == \
        "customresourcedefinition.apiextensions.k8s.io/inferenceservices.tfleet.dev\n"
    assert tfleet("crd", "--kind", "Nope").returncode == 3
