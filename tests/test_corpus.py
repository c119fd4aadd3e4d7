"""Every bad manifest of tests/corpus/bad through `tfleet render -f`: refused with exit status 2
and an error that names the file, the document and the field, while valid documents beside it
still render."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tfleet.cli import main as cli

from .corpus.catalogue import BAD, LAYERS, BadManifest, corpus

CORPUS = corpus()
REPO = Path(__file__).resolve().parents[1]
VALID = """apiVersion: tfleet.dev/v1alpha1
kind: InferenceService
metadata:
  name: beside-the-bad-one
spec:
  model:
    basePath: gs://models/resnet
"""


def render(capsys: pytest.CaptureFixture[str], *paths: Path) -> tuple[int, str, str]:
    status = cli.main(["render", *(arg for path in paths for arg in ("-f", str(path)))])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def rendered_names(out: str) -> set[str]:
    return {doc["metadata"]["name"] for doc in yaml.safe_load_all(out) if doc}


def test_the_corpus_covers_every_layer_and_is_large() -> None:
    assert len(CORPUS) >= 40
    assert {bad.layer for bad in CORPUS} == set(LAYERS)
    # Everything the operator can refuse, `tfleet render` refuses offline too.
    assert not [bad.name for bad in CORPUS if bad.render_accepts]


# The billion laughs runs as a bounded subprocess, in test_billion_laughs_is_refused_without_expanding.
@pytest.mark.parametrize("bad", [b for b in CORPUS if b.name != "yaml-billion-laughs"],
                         ids=lambda b: b.name)
def test_render_refuses_the_manifest_naming_file_document_and_field(
    bad: BadManifest, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = render(capsys, bad.path)
    assert status == 2, err
    for expect in bad.render_expects:
        assert f"error: {bad.path}: document {bad.document}: " in err
        lines = [line for line in err.split("error: ") if line.startswith(f"{bad.path}: document {bad.document}: ")]
        assert any(expect in line for line in lines), f"{expect!r} not among:\n{err}"
    assert "Traceback" not in err


@pytest.mark.parametrize("bad", [b for b in CORPUS if b.layer != "client"],
                         ids=lambda b: b.name)
def test_a_valid_document_beside_a_bad_file_still_renders(
    bad: BadManifest, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    valid = tmp_path / "valid.yaml"
    valid.write_text(VALID)
    status, out, err = render(capsys, valid, bad.path)
    assert status == 2
    assert f"{bad.path}: document {bad.document}: " in err
    assert str(valid) not in err
    assert "beside-the-bad-one" in rendered_names(out)


def test_the_valid_document_of_a_mixed_file_renders(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = render(capsys, BAD / "multi-document.yaml")
    assert status == 2
    assert "document 0" not in err
    names = rendered_names(out)
    assert "multi-valid" in names
    assert not any(name.startswith("multi-document") for name in names)


def _limit_memory() -> None:
    # Expanding the aliases would need far more than this; refusing them needs little.
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_billion_laughs_is_refused_without_expanding() -> None:
    # The real command in a process of its own, with bounded memory and a generous deadline, so
    # that a regression fails instead of hanging or swapping the machine.
    path = BAD / "yaml-billion-laughs.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "tfleet.cli", "render", "-f", str(path)],
        capture_output=True, text=True, timeout=60, cwd=REPO, preexec_fn=_limit_memory,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"error: {path}: document 0: YAML does not parse" in result.stderr
    assert "YAML aliases expand to more than 100000 nodes; refusing the document" in result.stderr
    assert result.stdout == ""


def test_aliases_that_expand_a_little_are_fine(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "anchors.yaml"
    manifest.write_text(VALID + "  resources:\n    requests: &r {cpu: '1'}\n    limits: *r\n")
    status, out, err = render(capsys, manifest)
    assert status == 0, err
    deployment = next(d for d in yaml.safe_load_all(out) if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["cpu"] == "1"
