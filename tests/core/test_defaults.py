"""The cluster's InferenceServiceDefaults applied to InferenceServices: the merge and its
precedence, field by field (table cases), what makes a new revision, and what the rendered
children and the status say about the defaults they were rendered with."""

from __future__ import annotations

from typing import Any

import pytest

from tfleet.api.defaults import BUILT_IN, Defaults, mirrored, parse_defaults_spec, split_registry
from tfleet.api.model import parse_object
from tfleet.api.schema import ValidationError
from tfleet.desired import children as builders
from tfleet.desired.defaulting import bridge_image, with_defaults
from tfleet.engine import plan
from tfleet.engine.plan import plan_children, plan_status

from .isvc_factory import IsvcBuilder, example_names, load_example, make_isvc
from .test_reconcile import LATER, NOW, converged, text

Manifest = dict[str, Any]


def defaults(spec: dict[str, Any], generation: int = 1) -> Defaults:
    return Defaults(spec=parse_defaults_spec(spec), name="cluster", generation=generation)


def rendered(manifest: IsvcBuilder, spec: dict[str, Any] | None) -> Manifest:
    """The Deployment the operator writes for `manifest` under defaults `spec` (None: none)."""
    isvc = with_defaults(manifest.isvc(), BUILT_IN if spec is None else defaults(spec))
    extras = builders.PodExtras(bridge_image=bridge_image(BUILT_IN if spec is None else defaults(spec)))
    return builders.build_deployment(isvc, extras=extras)


def pod(deployment: Manifest) -> Manifest:
    return deployment["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def container(deployment: Manifest) -> Manifest:
    return pod(deployment)["containers"][0]  # type: ignore[no-any-return]


def bridge(deployment: Manifest) -> Manifest:
    return pod(deployment)["initContainers"][0]  # type: ignore[no-any-return]


def template_labels(deployment: Manifest) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]  # type: ignore[no-any-return]


def template_annotations(deployment: Manifest) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["annotations"]  # type: ignore[no-any-return]


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
DEDICATED = {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
TEAM = {"key": "team", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}

# (InferenceService, defaults spec, what to read off the rendered Deployment, what it must be)
PRECEDENCE = [
    # ------------------------------------------------------------ the image
    pytest.param(make_isvc(), {}, lambda d: container(d)["image"], "tensorflow/serving:2.19.0",
                 id="image: no defaults, the built-in one"),
    pytest.param(make_isvc(), {"image": {"repository": "registry.example.com/ml/tfs", "tag": "2.18.0"}},
                 lambda d: container(d)["image"], "registry.example.com/ml/tfs:2.18.0",
                 id="image: the defaults' repository and tag"),
    pytest.param(make_isvc().gpu(1), {"image": {"tag": "2.18.0"}}, lambda d: container(d)["image"],
                 "tensorflow/serving:2.18.0-gpu", id="image: GPU variant, tag-gpu by default"),
    pytest.param(make_isvc().gpu(1), {"image": {"tag": "2.18.0", "gpuTag": "2.18.0-cuda12-gpu"}},
                 lambda d: container(d)["image"], "tensorflow/serving:2.18.0-cuda12-gpu",
                 id="image: GPU variant, the defaults' gpuTag"),
    pytest.param(make_isvc().image("tensorflow/serving:2.17.0"), {"image": {"tag": "2.18.0"}},
                 lambda d: container(d)["image"], "tensorflow/serving:2.17.0", id="image: the object's wins"),
    pytest.param(make_isvc().image("tensorflow/serving:2.17.0"),
                 {"image": {"registryMirrors": {"docker.io": "mirror.example.com/hub"}}},
                 lambda d: container(d)["image"], "mirror.example.com/hub/tensorflow/serving:2.17.0",
                 id="image: a mirror applies to the object's image too"),
    pytest.param(make_isvc(), {"image": {"registryMirrors": {"docker.io": "mirror.example.com:5000"}}},
                 lambda d: container(d)["image"], "mirror.example.com:5000/tensorflow/serving:2.19.0",
                 id="image: a mirror applies to the default image"),
    pytest.param(make_isvc().image("registry.example.com/ml/tfs:1"),
                 {"image": {"registryMirrors": {"docker.io": "mirror.example.com/hub"}}},
                 lambda d: container(d)["image"], "registry.example.com/ml/tfs:1",
                 id="image: a mirror of another registry leaves it alone"),
    pytest.param(make_isvc(), {"image": {"registryMirrors": {"ghcr.io": "mirror.example.com/ghcr"}}},
                 lambda d: bridge(d)["image"].rsplit(":", 1)[0], "mirror.example.com/ghcr/tfleet/tfleet",
                 id="image: a mirror applies to the health bridge"),
    pytest.param(make_isvc(), {"healthBridge": {"image": "registry.example.com/tfleet:0.9.0"}},
                 lambda d: bridge(d)["image"], "registry.example.com/tfleet:0.9.0",
                 id="health bridge: the defaults' image"),
    # ------------------------------------------------------------ pull secrets
    pytest.param(make_isvc().pod(imagePullSecrets=["team", "mirror"]), {"pod": {"imagePullSecrets": ["mirror", "hub"]}},
                 lambda d: pod(d)["imagePullSecrets"], [{"name": "mirror"}, {"name": "hub"}, {"name": "team"}],
                 id="imagePullSecrets: the defaults' first, then the object's, each once"),
    # ------------------------------------------------------------ GPUs
    pytest.param(make_isvc().gpu(1), {"gpu": {"resourceName": "amd.com/gpu"}},
                 lambda d: container(d)["resources"]["limits"], {"amd.com/gpu": "1"},
                 id="gpu.resourceName: the defaults'"),
    pytest.param(make_isvc().gpu(1, resource_name="nvidia.com/mig-1g.5gb"), {"gpu": {"resourceName": "amd.com/gpu"}},
                 lambda d: container(d)["resources"]["limits"], {"nvidia.com/mig-1g.5gb": "1"},
                 id="gpu.resourceName: the object's wins"),
    pytest.param(make_isvc().gpu(1), {"gpu": {"nodeSelector": {"pool": "a100"}}},
                 lambda d: pod(d)["nodeSelector"], {"pool": "a100"}, id="gpu.nodeSelector: the defaults' replace the built-in"),
    pytest.param(make_isvc().gpu(1, node_selector={"pool": "t4"}), {"gpu": {"nodeSelector": {"pool": "a100", "zone": "a"}}},
                 lambda d: pod(d)["nodeSelector"], {"pool": "t4"}, id="gpu.nodeSelector: the object's map replaces"),
    pytest.param(make_isvc().gpu(1, node_selector={}), {"gpu": {"nodeSelector": {"pool": "a100"}}},
                 lambda d: pod(d).get("nodeSelector"), None, id="gpu.nodeSelector: the object's {} selects nothing"),
    pytest.param(make_isvc().gpu(1).pod(nodeSelector={"zone": "b"}), {"gpu": {"nodeSelector": {"pool": "a100"}}},
                 lambda d: pod(d)["nodeSelector"], {"zone": "b", "pool": "a100"},
                 id="gpu.nodeSelector: merged with pod.nodeSelector as before"),
    pytest.param(make_isvc(), {"gpu": {"nodeSelector": {"pool": "a100"}}}, lambda d: pod(d).get("nodeSelector"),
                 None, id="gpu.nodeSelector: only for GPU pods"),
    pytest.param(make_isvc().gpu(1), {"gpu": {"tolerations": [DEDICATED]}}, lambda d: pod(d)["tolerations"],
                 [GPU_TOLERATION, DEDICATED], id="gpu.tolerations: the defaults', after the GPU taint's"),
    pytest.param(make_isvc().gpu(1, tolerations=[TEAM]), {"gpu": {"tolerations": [DEDICATED]}},
                 lambda d: pod(d)["tolerations"], [GPU_TOLERATION, TEAM], id="gpu.tolerations: the object's list replaces"),
    pytest.param(make_isvc().gpu(1, tolerations=[]), {"gpu": {"tolerations": [DEDICATED]}},
                 lambda d: pod(d)["tolerations"], [GPU_TOLERATION], id="gpu.tolerations: the object's [] replaces too"),
    # ------------------------------------------------------------ resources
    pytest.param(make_isvc(), {"resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}},
                 lambda d: container(d)["resources"],
                 {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}, id="resources: the defaults'"),
    pytest.param(make_isvc().resources(requests={"memory": "16Gi"}),
                 {"resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}},
                 lambda d: container(d)["resources"], {"requests": {"cpu": "1", "memory": "16Gi"}},
                 id="resources: a resource the object names takes neither request nor limit from the defaults"),
    pytest.param(make_isvc().resources(limits={"cpu": "500m"}), {"resources": {"requests": {"cpu": "1", "memory": "2Gi"}}},
                 lambda d: container(d)["resources"], {"requests": {"memory": "2Gi"}, "limits": {"cpu": "500m"}},
                 id="resources: a limit the object sets keeps the defaults' request of it away"),
    pytest.param(make_isvc().gpu(2), {"resources": {"limits": {"memory": "4Gi"}}},
                 lambda d: container(d)["resources"]["limits"], {"memory": "4Gi", "nvidia.com/gpu": "2"},
                 id="resources: the GPU limit comes from gpu.count"),
    # ------------------------------------------------------------ rollout
    pytest.param(make_isvc(), {"rollout": {"progressDeadlineSeconds": 900}},
                 lambda d: d["spec"]["progressDeadlineSeconds"], 900, id="rollout.progressDeadlineSeconds: the defaults'"),
    pytest.param(make_isvc().set("spec.rollout.progressDeadlineSeconds", 120), {"rollout": {"progressDeadlineSeconds": 900}},
                 lambda d: d["spec"]["progressDeadlineSeconds"], 120, id="rollout.progressDeadlineSeconds: the object's wins"),
    pytest.param(make_isvc(), {}, lambda d: d["spec"]["progressDeadlineSeconds"], 600,
                 id="rollout.progressDeadlineSeconds: the built-in one"),
    # ------------------------------------------------------------ pod metadata and settings
    pytest.param(make_isvc().pod(labels={"team": "fraud", "tier": "gold"}),
                 {"pod": {"labels": {"team": "platform", "cost-center": "ml"}}},
                 lambda d: {k: v for k, v in template_labels(d).items() if "/" not in k},
                 {"team": "fraud", "tier": "gold", "cost-center": "ml"}, id="pod.labels: merged per key, the object's win"),
    pytest.param(make_isvc(), {"pod": {"labels": {"tfleet.dev/inferenceservice": "other"}}},
                 lambda d: template_labels(d)["tfleet.dev/inferenceservice"], "demo",
                 id="pod.labels: tfleet's own labels win over the defaults"),
    pytest.param(make_isvc().pod(annotations={"sidecar.istio.io/inject": "false"}),
                 {"pod": {"annotations": {"sidecar.istio.io/inject": "true", "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}}},
                 lambda d: {k: v for k, v in template_annotations(d).items() if not k.startswith(("tfleet", "prometheus"))},
                 {"sidecar.istio.io/inject": "false", "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
                 id="pod.annotations: merged per key, the object's win"),
    pytest.param(make_isvc(), {"pod": {"priorityClassName": "ml-serving"}}, lambda d: pod(d)["priorityClassName"],
                 "ml-serving", id="pod.priorityClassName: the defaults'"),
    pytest.param(make_isvc().pod(priorityClassName="ml-critical"), {"pod": {"priorityClassName": "ml-serving"}},
                 lambda d: pod(d)["priorityClassName"], "ml-critical", id="pod.priorityClassName: the object's wins"),
]


@pytest.mark.parametrize(("manifest", "spec", "read", "expected"), PRECEDENCE)
def test_precedence(manifest: IsvcBuilder, spec: dict[str, Any], read: Any, expected: Any) -> None:
    assert read(rendered(manifest, spec)) == expected


def test_rollout_steps_come_from_the_defaults_unless_the_object_sets_its_own() -> None:
    steps = {"rollout": {"steps": [{"weight": 25, "pause": "30s"}, {"weight": 75}]}}
    own = with_defaults(make_isvc().canary(50).isvc(), defaults(steps))
    taken = with_defaults(make_isvc().isvc(), defaults(steps))
    built_in = with_defaults(make_isvc().isvc(), BUILT_IN)
    assert [(s.weight, s.pause) for s in own.spec.rollout.steps] == [(50, "30s")]
    assert [(s.weight, s.pause) for s in taken.spec.rollout.steps] == [(25, "30s"), (75, "60s")]
    assert [(s.weight, s.pause) for s in built_in.spec.rollout.steps] == [(10, "60s"), (50, "120s")]
    # An empty list of the object's own replaces the defaults' too: straight to promotion.
    empty = with_defaults(make_isvc().set("spec.rollout.steps", []).isvc(), defaults(steps))
    assert empty.spec.rollout.steps == ()


@pytest.mark.parametrize("name", example_names())
def test_without_defaults_every_example_renders_as_before(name: str) -> None:
    # No InferenceServiceDefaults object: the children, and so the revision names, are what they
    # were before defaults existed (the built-in defaults), so an operator upgrade rolls nothing.
    isvc = parse_object(load_example(name))
    assert builders.build_children(with_defaults(isvc, BUILT_IN)) == builders.build_children(isvc)
    empty = Defaults(spec=parse_defaults_spec({}), name="cluster", generation=1)
    assert builders.build_children(with_defaults(isvc, empty)) == builders.build_children(isvc)


def test_annotations_too_large_only_together_are_refused_naming_both() -> None:
    half = "x" * (150 * 1024)
    manifest = make_isvc().pod(annotations={"example.com/own": half})
    with pytest.raises(ValidationError) as refused:
        with_defaults(manifest.isvc(), defaults({"pod": {"annotations": {"example.com/platform": half}}}))
    (error,) = refused.value.errors
    assert error.path == "spec.pod.annotations"
    assert "InferenceServiceDefaults cluster generation 1" in error.message and "262144" in error.message
    # The operator reports it like any invalid spec, and keeps the children it has.
    parsed = plan.parse_once(manifest.manifest(), defaults({"pod": {"annotations": {"example.com/platform": half}}}))
    assert parsed.isvc is None and parsed.invalid is not None and parsed.invalid.startswith("spec.pod.annotations:")


# ---------------------------------------------------------------------- revisions


def revision(manifest: IsvcBuilder, spec: dict[str, Any] | None) -> str:
    return builders.compute_revision(with_defaults(manifest.isvc(), BUILT_IN if spec is None else defaults(spec))).name


REVISION_CASES = [
    pytest.param({"image": {"tag": "2.18.0"}}, True, id="an image tag"),
    pytest.param({"image": {"registryMirrors": {"docker.io": "mirror.example.com/hub"}}}, True, id="a registry mirror"),
    pytest.param({"pod": {"labels": {"team": "platform"}}}, True, id="a pod label"),
    pytest.param({"pod": {"annotations": {"example.com/a": "b"}}}, True, id="a pod annotation"),
    pytest.param({"pod": {"priorityClassName": "ml"}}, True, id="a priority class"),
    pytest.param({"pod": {"imagePullSecrets": ["hub"]}}, True, id="a pull secret"),
    pytest.param({"resources": {"requests": {"cpu": "1"}}}, True, id="resources"),
    pytest.param({"rollout": {"steps": [{"weight": 30}], "progressDeadlineSeconds": 60}}, False, id="rollout settings"),
    pytest.param({"healthBridge": {"image": "registry.example.com/tfleet:9"}}, False, id="the health bridge image"),
    pytest.param({"gpu": {"resourceName": "amd.com/gpu"}}, False, id="GPU settings, for a CPU service"),
]


@pytest.mark.parametrize(("spec", "rolls"), REVISION_CASES)
def test_what_runs_in_pods_makes_a_new_revision_and_nothing_else_does(spec: dict[str, Any], rolls: bool) -> None:
    manifest = make_isvc().version(3)
    assert (revision(manifest, spec) != revision(manifest, None)) is rolls


def test_a_field_the_object_sets_itself_is_not_rolled_by_the_defaults() -> None:
    own = make_isvc().version(3).image("tensorflow/serving:2.17.0").pod(priorityClassName="mine")
    before = revision(own, {"image": {"tag": "2.18.0"}, "pod": {"priorityClassName": "theirs"}})
    assert revision(own, {"image": {"tag": "2.16.0"}, "pod": {"priorityClassName": "other"}}) == before


# ---------------------------------------------------------------------- through the planner


def test_a_defaults_change_rolls_a_running_service_out_to_a_new_revision_and_the_status_names_them() -> None:
    body, children = converged(make_isvc("x").version(3).replicas(2).canary(50))
    assert "defaults" not in body["status"]
    labelled = defaults({"pod": {"labels": {"team": "platform"}}}, generation=4)
    parsed = plan.parse_once(body, labelled)
    result = plan_children(body, children, [], LATER, parsed=parsed)
    (canary,) = [m for m in result.apply if m["kind"] == "Deployment"]
    assert template_labels(canary)["team"] == "platform"
    assert result.rollout is not None and result.rollout.canary == plan.revision_of(canary)
    written = plan_status(body, children, [], text(LATER), result.rollout, parsed=parsed)
    assert written.status is not None and written.status["defaults"] == {"name": "cluster", "generation": 4}
    # Rendered with the built-in defaults again (the object was deleted): the record goes.
    again = plan_status({**body, "status": written.status}, children, [], text(LATER), result.rollout,
                        parsed=plan.parse_once(body))
    assert again.status is not None and "defaults" not in again.status


def test_an_invalid_spec_keeps_the_defaults_its_children_were_rendered_with_in_the_status() -> None:
    body, children = converged(make_isvc("x").version(3))
    parsed = plan.parse_once(body, defaults({}, generation=2))
    first = plan_children(body, children, [], NOW, parsed=parsed)
    status = plan_status(body, children, [], text(NOW), first.rollout, parsed=parsed).status
    assert status is not None and status["defaults"] == {"name": "cluster", "generation": 2}
    broken = {**body, "status": status, "spec": {**body["spec"], "pod": {"affinity": {"nodeAfinity": {}}}}}
    later = plan.parse_once(broken, defaults({}, generation=3))
    result = plan_status(broken, children, [], text(LATER), None, parsed=later)
    assert result.status is not None and result.status["defaults"] == {"name": "cluster", "generation": 2}


def test_a_new_revision_gets_the_defaults_bridge_image_and_a_running_one_keeps_its_own() -> None:
    body, children = converged(make_isvc("x").version(3))
    moved = defaults({"healthBridge": {"image": "registry.example.com/tfleet:9"}})
    assert plan_children(body, children, [], LATER, parsed=plan.parse_once(body, moved)).apply == []
    bumped = make_isvc("x").version(4).manifest()
    bumped["status"] = body["status"]
    result = plan_children(bumped, children, [], LATER, parsed=plan.parse_once(bumped, moved))
    (new,) = [m for m in result.apply if m["kind"] == "Deployment"]
    assert bridge(new)["image"] == "registry.example.com/tfleet:9"


# ---------------------------------------------------------------------- image references


@pytest.mark.parametrize(("image", "registry", "rest"), [
    ("tensorflow/serving:2.19.0", "docker.io", "tensorflow/serving:2.19.0"),
    ("busybox", "docker.io", "library/busybox"),
    ("busybox@sha256:" + "a" * 64, "docker.io", "library/busybox@sha256:" + "a" * 64),
    ("docker.io/tensorflow/serving", "docker.io", "tensorflow/serving"),
    ("index.docker.io/tensorflow/serving", "docker.io", "tensorflow/serving"),
    ("ghcr.io/tfleet/tfleet:0.1.0", "ghcr.io", "tfleet/tfleet:0.1.0"),
    ("localhost/tfs", "localhost", "tfs"),
    ("registry.example.com:5000/tfs:1", "registry.example.com:5000", "tfs:1"),
    ("Registry/tfs", "Registry", "tfs"),  # not lower case: a host (distribution/reference)
])
def test_registries_are_read_as_container_runtimes_read_them(image: str, registry: str, rest: str) -> None:
    assert split_registry(image) == (registry, rest)


def test_a_mirror_with_a_trailing_slash_is_not_doubled() -> None:
    assert mirrored("busybox", {"docker.io": "mirror.example.com/hub/"}) == "mirror.example.com/hub/library/busybox"


# ---------------------------------------------------------------------- the CLI's view


def test_the_cli_shows_the_steps_the_operator_rolls_out_with() -> None:
    from datetime import datetime

    from tfleet.cli.rollout import pause_left, rollout_steps
    from tfleet.cli.tree import build_tree

    body = make_isvc("x").manifest()
    body["status"] = {"defaults": {"name": "cluster", "generation": 2},
                      "rollout": {"phase": "Progressing", "step": 0, "stepStartedAt": "2026-01-01T00:00:00Z"}}
    recorded = {"status": {"applied": {"rollout": {"steps": [{"weight": 10, "pause": "5m"}, {"weight": 20},
                                                             {"weight": 40}]}}}}
    steps = rollout_steps(body, lambda name: recorded if name == "cluster" else None)
    assert [s["weight"] for s in steps] == [10, 20, 40]
    later = datetime(2026, 1, 1, 0, 1)
    assert pause_left(body, later, steps) == 240.0
    summary, _ = build_tree(body, [], [], later, steps=steps)
    assert ("  Step", "1/3") in summary.fields
    # Unreadable defaults (not found, not allowed): the built-in steps.
    assert [s["weight"] for s in rollout_steps(body, lambda name: None)] == [10, 50]
    # The object's own steps, whatever the defaults say.
    own = make_isvc("x").canary(25).manifest()
    own["status"] = body["status"]
    assert [s["weight"] for s in rollout_steps(own, lambda name: recorded)] == [25]
