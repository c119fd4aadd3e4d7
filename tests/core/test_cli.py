"""`tfleet render` and `tfleet crd`, run as the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tfleet.api.crd import build_crd, crd_yaml
from tfleet.api.model import parse_object
from tfleet.cli import main as cli
from tfleet.desired import children as builders
from tfleet.engine.plan import plan_children

from .isvc_factory import EXAMPLE_FILES, REPO, IsvcBuilder, make_isvc

TFLEET = Path(sys.executable).with_name("tfleet")


def tfleet(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TFLEET), *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=cwd or REPO
    )


def dump(*docs: Any) -> str:
    return yaml.safe_dump_all([d.manifest() if isinstance(d, IsvcBuilder) else d for d in docs], sort_keys=False)


def expected_children(*manifests: dict[str, Any], namespace: str = "default") -> list[dict[str, Any]]:
    """What the operator would create, owner references aside, for these manifests."""
    out = []
    for manifest in manifests:
        doc = dict(manifest)
        doc["metadata"] = {"namespace": namespace, **(doc.get("metadata") or {})}
        out.extend(builders.build_children(parse_object(doc)))
    return out


# --------------------------------------------------------------------------- valid input


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.stem for p in EXAMPLE_FILES])
def test_every_example_renders_valid_objects(path: Path) -> None:
    result = tfleet("render", "-f", str(path.relative_to(REPO)))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    rendered = list(yaml.safe_load_all(result.stdout))
    manifests = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert rendered == expected_children(*manifests)
    for obj in rendered:
        kubernetes_validate.validate(obj, "1.35", strict=True)
        assert "ownerReferences" not in obj["metadata"]
    # Repeated values are written out: some GitOps tools refuse YAML anchors.
    assert "&id" not in result.stdout and "*id" not in result.stdout


def test_several_files_render_in_order() -> None:
    paths = [str(p.relative_to(REPO)) for p in EXAMPLE_FILES]
    result = tfleet("render", *[arg for p in paths for arg in ("-f", p)])
    assert result.returncode == 0, result.stderr
    manifests = [d for p in EXAMPLE_FILES for d in yaml.safe_load_all(p.read_text()) if d]
    assert list(yaml.safe_load_all(result.stdout)) == expected_children(*manifests)


def test_a_multi_document_file_renders_every_document(tmp_path: Path) -> None:
    first, second = make_isvc("a").replicas(2), make_isvc("b").gpu(1).batching(8, [4, 8])
    path = tmp_path / "fleet.yaml"
    # Empty documents (a leading ---, a trailing ---) are skipped, as kubectl does.
    path.write_text("---\n" + dump(first, second) + "---\n")
    result = tfleet("render", "-f", str(path))
    assert result.returncode == 0, result.stderr
    assert list(yaml.safe_load_all(result.stdout)) == expected_children(first.manifest(), second.manifest())


def test_dash_reads_stdin_and_mixes_with_files() -> None:
    piped = make_isvc("piped", namespace=None)
    result = tfleet("render", "-f", "-", "-f", "examples/gpu.yaml", "-n", "team-a", stdin=dump(piped))
    assert result.returncode == 0, result.stderr
    gpu = yaml.safe_load((REPO / "examples/gpu.yaml").read_text())
    rendered = list(yaml.safe_load_all(result.stdout))
    assert rendered == expected_children(piped.manifest(), namespace="team-a") + expected_children(gpu)
    # -n only fills in a namespace the document does not set.
    assert {o["metadata"]["namespace"] for o in rendered} == {"team-a", "ml"}


def test_main_returns_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "-f", "examples/basic-cpu.yaml"]) == 0
    out = capsys.readouterr().out
    assert [o["kind"] for o in yaml.safe_load_all(out)][:2] == ["ConfigMap", "Deployment"]


def test_crd_prints_the_crd() -> None:
    result = tfleet("crd")
    assert result.returncode == 0, result.stderr
    assert result.stdout == crd_yaml()
    assert yaml.safe_load(result.stdout) == build_crd()


# --------------------------------------------------------------------------- invalid input

HEAD = "apiVersion: tfleet.dev/v1alpha1\nkind: InferenceService\n"

BAD_INPUTS = [
    pytest.param(HEAD + "metadata: {name: x\nspec: {}\n",
                 ["error: in.yaml: document 0: YAML does not parse (line 4, column 5): expected ',' or '}', but got ':'"],
                 id="YAML that does not parse"),
    pytest.param("just a sentence\n", ["error: in.yaml: document 0: must be a mapping (an object), got str"],
                 id="a scalar document"),
    pytest.param("- a\n- b\n", ["error: in.yaml: document 0: must be a mapping (an object), got list"],
                 id="a list document"),
    pytest.param("kind: InferenceService\nmetadata: {name: x}\nspec: {}\n",
                 ["error: in.yaml: document 0: apiVersion: required field is missing"],
                 id="no apiVersion"),
    pytest.param("apiVersion: tfleet.dev/v1alpha1\nkind: InferenceServce\nmetadata: {name: x}\nspec: {}\n",
                 ["error: in.yaml: document 0: kind: must be \"InferenceService\" or \"InferenceServiceDefaults\", "
                  "got 'InferenceServce'"],
                 id="a misspelt kind"),
    pytest.param("apiVersion: tfleet.dev/v1\nkind: InferenceService\nmetadata: {name: x}\nspec: {}\n",
                 ["error: in.yaml: document 0: apiVersion: must be \"tfleet.dev/v1alpha1\", got 'tfleet.dev/v1'"],
                 id="a version that does not exist"),
    pytest.param(HEAD + "metadata: {name: x}\n", ["error: in.yaml: document 0: spec: required field is missing"],
                 id="no spec"),
    pytest.param(dump(make_isvc("x").unset("spec.model.basePath")),
                 ["error: in.yaml: document 0: spec.model.basePath: required field is missing"],
                 id="no model basePath"),
    pytest.param(dump(make_isvc("x").replicas("two")),
                 ['error: in.yaml: document 0: spec.replicas: must be an integer, got string "two"'],
                 id="a string for replicas"),
    pytest.param(dump(make_isvc("x").set("spec.gpu.cuont", 1)),
                 ["error: in.yaml: document 0: spec.gpu.cuont: unknown field "
                  "(known fields: count, resourceName, nodeSelector, tolerations)"],
                 id="a misspelt field"),
    pytest.param(dump(make_isvc("x").base_path("ftp://models/x")),
                 ['error: in.yaml: document 0: spec.model.basePath: unsupported storage "ftp://": '
                  "use gs://, s3://, hdfs://, pvc://<claim>/<path> or an absolute path"],
                 id="a storage scheme TF Serving cannot read"),
    pytest.param(dump(make_isvc("x").gpu(1).image("tensorflow/serving:2.19.0")),
                 ['error: in.yaml: document 0: spec.image: "tensorflow/serving:2.19.0" is not a GPU image, but '
                  "gpu.count is 1: use a tag ending in -gpu (for example tensorflow/serving:2.19.0-gpu)"],
                 id="a GPU request with the CPU image"),
    pytest.param(dump(make_isvc("x").batching(32, [8, 16])),
                 ["error: in.yaml: document 0: spec.batching.allowedBatchSizes: last size (16) must equal maxBatchSize (32)"],
                 id="allowed batch sizes that stop short of the maximum"),
    pytest.param(dump(make_isvc("x").canary(50, 20)),
                 ["error: in.yaml: document 0: spec.rollout.steps[1].weight: step weights must be strictly "
                  "increasing, but 20 follows 50"],
                 id="canary weights that go down"),
    pytest.param(dump(make_isvc("x").autoscaling(4, 2)),
                 ["error: in.yaml: document 0: spec.autoscaling.minReplicas: minReplicas (4) must be less than or "
                  "equal to maxReplicas (2)"],
                 id="minReplicas above maxReplicas"),
    pytest.param(dump(make_isvc("Fraud_Model")),
                 ['error: in.yaml: document 0: metadata.name: "Fraud_Model" must be a DNS label of at most 52 '
                  "characters (a-z, 0-9, -) that starts with a letter"],
                 id="a name that is not a DNS label"),
    pytest.param(dump(make_isvc("x").server(grpcPort=8501)),
                 ["error: in.yaml: document 0: spec.server.restPort: restPort (8501) must differ from grpcPort (8501)"],
                 id="gRPC and REST on one port"),
    pytest.param(HEAD + "metadata: x\nspec: {model: {basePath: /m}}\n",
                 ["error: in.yaml: document 0: metadata: must be an object",
                  "error: in.yaml: document 0: metadata.name: required field is missing"],
                 id="metadata as a string"),
    pytest.param(dump(make_isvc("x").replicas(-1).set("spec.service.type", "ExternalName")),
                 ["error: in.yaml: document 0: spec.replicas: must be greater than or equal to 0, got -1",
                  'error: in.yaml: document 0: spec.service.type: must be one of ClusterIP, NodePort, LoadBalancer, '
                  'got "ExternalName"'],
                 id="every error of a document is reported"),
]


@pytest.mark.parametrize(("text", "stderr"), BAD_INPUTS)
def test_bad_input(tmp_path: Path, text: str, stderr: list[str]) -> None:
    (tmp_path / "in.yaml").write_text(text)
    result = tfleet("render", "-f", "in.yaml", cwd=tmp_path)
    assert result.stderr.splitlines() == stderr
    assert result.returncode == 2
    assert result.stdout == ""


def test_errors_name_the_document_and_valid_documents_still_render(tmp_path: Path) -> None:
    good, bad = make_isvc("good"), make_isvc("bad").base_path("s4://x")
    path = tmp_path / "mixed.yaml"
    path.write_text(dump(good, bad, make_isvc("also-good")))
    result = tfleet("render", "-f", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f'error: {path}: document 1: spec.model.basePath: unsupported storage "s4://": '
        "use gs://, s3://, hdfs://, pvc://<claim>/<path> or an absolute path"
    ]
    # Nothing of the invalid document reaches stdout; the valid ones render as usual.
    rendered = list(yaml.safe_load_all(result.stdout))
    assert rendered == expected_children(good.manifest(), make_isvc("also-good").manifest())
    assert all(o["metadata"]["labels"]["tfleet.dev/inferenceservice"] != "bad" for o in rendered)


def test_a_parse_error_names_the_document_it_is_in(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(dump(make_isvc("first")) + "---\n" + HEAD + "spec: [unclosed\n")
    result = tfleet("render", "-f", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {path}: document 1: YAML does not parse (line ")
    assert list(yaml.safe_load_all(result.stdout)) == expected_children(make_isvc("first").manifest())


def test_errors_from_stdin_name_stdin() -> None:
    result = tfleet("render", "-f", "-", stdin=dump(make_isvc("x").batching(32, [8, 16])))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: <stdin>: document 0: spec.batching.allowedBatchSizes: last size (16) must equal maxBatchSize (32)"
    ]
    assert result.stdout == ""


def test_a_missing_file(tmp_path: Path) -> None:
    result = tfleet("render", "-f", "examples/gpu.yaml", "-f", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f'error: the path "{tmp_path / "nope.yaml"}" does not exist']
    # The readable file still renders.
    gpu = yaml.safe_load((REPO / "examples/gpu.yaml").read_text())
    assert list(yaml.safe_load_all(result.stdout)) == expected_children(gpu)


# --------------------------------------------------------------------------- kubectl's -f, -R and -o


def test_a_directory_renders_its_manifests_in_name_order() -> None:
    result = tfleet("render", "-f", "examples/")
    assert result.returncode == 0, result.stderr
    manifests = [d for p in sorted((REPO / "examples").glob("*.y*ml")) for d in yaml.safe_load_all(p.read_text()) if d]
    assert list(yaml.safe_load_all(result.stdout)) == expected_children(*manifests)


def test_other_kinds_pass_through_unchanged_in_place(tmp_path: Path) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds"}, "stringData": {"k": "v"}}
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}}
    (tmp_path / "mixed.yaml").write_text(dump(namespace, make_isvc("a"), secret))
    result = tfleet("render", "-f", str(tmp_path / "mixed.yaml"))
    assert result.returncode == 0, result.stderr
    rendered = list(yaml.safe_load_all(result.stdout))
    assert rendered == [namespace, *expected_children(make_isvc("a").manifest()), secret]


def test_recursive_reads_subdirectories_and_only_manifest_extensions(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.yaml").write_text(dump(make_isvc("a")))
    (tmp_path / "sub" / "b.yml").write_text(dump(make_isvc("b")))
    (tmp_path / "c.json").write_text(json.dumps(make_isvc("c").manifest()))
    (tmp_path / "notes.txt").write_text("not a manifest: [")
    flat = tfleet("render", "-f", str(tmp_path), "-o", "name")
    assert flat.returncode == 0, flat.stderr
    names = flat.stdout.splitlines()
    assert "deployment.apps/a" in " ".join(names) or any(n.startswith("deployment.apps/a-") for n in names)
    assert not any("/b-" in n or n.endswith("/b") for n in names)
    deep = tfleet("render", "-R", "-f", str(tmp_path), "-o", "name")
    assert deep.returncode == 0, deep.stderr
    owners = [n.split("/", 1)[1].split("-")[0] for n in deep.stdout.splitlines()]
    assert sorted(set(owners)) == ["a", "b", "c"]
    # a.yaml, c.json, then sub/b.yml: lexical order, a subdirectory walked where it sorts.
    assert owners.index("a") < owners.index("c") < owners.index("b")
    # A file named explicitly is read whatever its extension.
    (tmp_path / "named.txt").write_text(dump(make_isvc("d")))
    assert tfleet("render", "-f", str(tmp_path / "named.txt")).returncode == 0


def test_a_directory_without_manifests_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("nothing here")
    result = tfleet("render", "-f", str(tmp_path))
    assert result.returncode == 2
    assert f'error reading "{tmp_path}": recognized file extensions are .json, .yaml, .yml' in result.stderr


def test_output_json_is_a_list_and_name_lists_names() -> None:
    as_json = tfleet("render", "-f", "examples/basic-cpu.yaml", "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["kind"] == "List"
    basic = [d for d in yaml.safe_load_all((REPO / "examples/basic-cpu.yaml").read_text()) if d]
    assert doc["items"] == expected_children(*basic)
    names = tfleet("render", "-f", "examples/basic-cpu.yaml", "-o", "name").stdout.splitlines()
    assert names[:2] == [f"configmap/{doc['items'][0]['metadata']['name']}",
                         f"deployment.apps/{doc['items'][1]['metadata']['name']}"]


def test_crd_output_formats() -> None:
    assert json.loads(tfleet("crd", "-o", "json").stdout) == build_crd()
    assert tfleet("crd", "-o", "name").stdout == "customresourcedefinition.apiextensions.k8s.io/inferenceservices.tfleet.dev\n"


def test_render_needs_a_file() -> None:
    result = tfleet("render")
    assert result.returncode == 3  # a usage error
    assert "-f/--filename" in result.stderr
    assert result.stdout == ""


# --------------------------------------------------------------------------- drain tokens


def _drain_tokens(objects: list[dict[str, Any]]) -> list[tuple[str | None, str | None]]:
    """(bridge env, preStop header) of every rendered Deployment."""
    out = []
    for obj in objects:
        if obj["kind"] != "Deployment":
            continue
        pod = obj["spec"]["template"]["spec"]
        env = {e["name"]: e["value"] for e in pod["initContainers"][0].get("env") or []}
        headers = {h["name"]: h["value"] for h in pod["containers"][0]["lifecycle"]["preStop"]["httpGet"].get(
            "httpHeaders") or []}
        out.append((env.get("TFLEET_DRAIN_TOKEN"), headers.get("X-Tfleet-Drain-Token")))
    return out


def test_render_without_a_drain_key_renders_no_token() -> None:
    result = tfleet("render", "-f", "examples/canary.yaml")
    assert result.returncode == 0, result.stderr
    assert _drain_tokens(list(yaml.safe_load_all(result.stdout))) == [(None, None)]


def test_render_with_the_drain_key_renders_the_operators_token(tmp_path: Path) -> None:
    key = bytes(range(7, 39))
    (tmp_path / "key").write_bytes(key)
    result = tfleet("render", "-f", "examples/canary.yaml", "--drain-key-file", str(tmp_path / "key"))
    assert result.returncode == 0, result.stderr
    rendered = list(yaml.safe_load_all(result.stdout))
    ((token, header),) = _drain_tokens(rendered)
    assert token is not None and token == header
    # What the operator applies for the same manifest and key, on its first reconcile.
    doc = yaml.safe_load((REPO / "examples/canary.yaml").read_text())
    doc["metadata"].setdefault("uid", "u")
    applied = plan_children(doc, {}, [], datetime(2026, 1, 1), drain_key=key).apply
    assert _drain_tokens(applied) == [(token, token)]
    assert [o["metadata"]["name"] for o in rendered] == [o["metadata"]["name"] for o in applied]


@pytest.mark.parametrize(("content", "message"), [
    (b"short", "--drain-key-file: {path}: a drain key needs at least 16 bytes, this one has 5"),
    (None, "--drain-key-file: cannot read {path}: No such file or directory"),
], ids=["too-short", "missing"])
def test_a_bad_drain_key_file_is_refused_naming_the_flag(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "key"
    if content is not None:
        path.write_bytes(content)
    result = tfleet("render", "-f", "examples/canary.yaml", "--drain-key-file", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: {message.format(path=path)}"]
    assert result.stdout == ""


def test_render_shows_the_bridges_pre_flight(tmp_path: Path) -> None:
    golden = '[{"instances": [[1.0, 2.0]], "predictions": [[2.5, 3.0]]}]'
    path = tmp_path / "fraud.yaml"
    path.write_text(dump(make_isvc("fraud").set("spec.model.preflight", {"requests": {"inline": golden},
                                                                           "tolerance": 0.001})))
    result = tfleet("render", "-f", str(path))
    assert result.returncode == 0, result.stderr
    rendered = {o["kind"]: o for o in yaml.safe_load_all(result.stdout) if o["kind"] in ("ConfigMap", "Deployment")}
    assert rendered["ConfigMap"]["data"]["golden-requests.json"] == golden
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    args = " ".join(pod["initContainers"][0]["args"])
    assert "--preflight-requests /etc/tfleet/preflight/requests.json --preflight-tolerance 0.001 " \
           "--preflight-timeout 30s" in args
    assert {"name": "golden-requests", "configMap": {"name": rendered["ConfigMap"]["metadata"]["name"], "items": [
        {"key": "golden-requests.json", "path": "requests.json"}]}} in pod["volumes"]
    # A bad inline document is refused offline, naming the field.
    path.write_text(dump(make_isvc("fraud").set("spec.model.preflight", {"requests": {"inline": "[1]"}})))
    bad = tfleet("render", "-f", str(path))
    assert bad.returncode == 2
    assert 'spec.model.preflight.requests.inline: request 1: must be a JSON object with "instances" or ' \
           '"inputs", not a number' in bad.stderr
