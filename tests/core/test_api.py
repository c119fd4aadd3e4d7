"""The typed InferenceService model: defaults, immutability and every validation rule."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tfleet.api import model as api
from tfleet.api.model import check_update, parse_object, parse_spec
from tfleet.api.schema import ValidationError

from .isvc_factory import IsvcBuilder, example_names, load_example, make_isvc

# --------------------------------------------------------------------------- defaults


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


DEFAULT_CASES = [
    pytest.param(
        make_isvc("minimal"),
        {
            "name": "minimal",
            "namespace": "ml",
            "model_name": "minimal",
            "image": api.DEFAULT_IMAGE,
            "spec.image": None,
            "spec.replicas": 1,
            "spec.autoscaling": None,
            "spec.batching": None,
            "spec.model.name": None,
            "spec.model.version": None,
            "spec.model.credentials_secret": None,
            "spec.resources.requests": {},
            "spec.resources.limits": {},
            "spec.gpu.count": 0,
            "spec.gpu.resource_name": "nvidia.com/gpu",
            "spec.gpu.node_selector": {"nvidia.com/gpu.present": "true"},
            "spec.gpu.tolerations": (),
            "spec.server.grpc_port": 8500,
            "spec.server.rest_port": 8501,
            "spec.server.max_connection_age_seconds": 30,
            "spec.server.monitoring": True,
            "spec.server.model_config_poll_seconds": 60,
            "spec.server.extra_args": (),
            "spec.service.type": "ClusterIP",
            "spec.service.headless": True,
            "spec.rollout.strategy": "Canary",
            "spec.rollout.steps": (api.RolloutStep(10, "60s"), api.RolloutStep(50, "120s")),
            "spec.rollout.progress_deadline_seconds": 600,
            "spec.rollout.auto_rollback": True,
            "spec.rollout.max_surge": "25%",
            "spec.rollout.max_unavailable": 0,
            "spec.pod.termination_grace_period_seconds": 45,
            "spec.pod.drain_seconds": 15,
            "spec.pod.affinity": None,
            "spec.pod.service_account_name": None,
        },
        id="a manifest with only basePath gets every default",
    ),
    pytest.param(
        make_isvc("nons", namespace=None),
        {"namespace": "default"},
        id="a manifest without namespace lands in default",
    ),
    pytest.param(
        make_isvc("named").model_name("resnet").version(3),
        {"model_name": "resnet", "spec.model.version": 3},
        id="an explicit model name wins over metadata.name",
    ),
    pytest.param(
        make_isvc("g").gpu(2),
        {"image": api.DEFAULT_IMAGE + "-gpu", "spec.image": None, "spec.gpu.count": 2},
        id="a GPU request without image picks the -gpu variant",
    ),
    pytest.param(
        make_isvc("g").gpu(1).image("tensorflow/serving:2.18.0-gpu"),
        {"image": "tensorflow/serving:2.18.0-gpu"},
        id="an explicit GPU image is kept",
    ),
    pytest.param(
        make_isvc("b").batching(32),
        {
            "spec.batching.max_batch_size": 32,
            "spec.batching.batch_timeout_micros": 1000,
            "spec.batching.num_batch_threads": 4,
            "spec.batching.max_enqueued_batches": 100,
            "spec.batching.allowed_batch_sizes": (),
            "spec.batching.pad_variable_length_inputs": False,
        },
        id="batching with only maxBatchSize gets the TF Serving defaults",
    ),
    pytest.param(
        make_isvc("b").batching(32, [8, 16, 32]),
        {"spec.batching.allowed_batch_sizes": (8, 16, 32)},
        id="allowed batch sizes become a tuple",
    ),
    pytest.param(
        make_isvc("a").autoscaling(None, 5),
        {
            "spec.autoscaling.min_replicas": 1,
            "spec.autoscaling.max_replicas": 5,
            "spec.autoscaling.target_cpu_utilization_percentage": 80,
        },
        id="autoscaling with only maxReplicas scales from 1 at 80 percent",
    ),
    pytest.param(
        make_isvc("c").set("spec.rollout.steps", [{"weight": 25}]),
        {"spec.rollout.steps": (api.RolloutStep(25, "60s"),)},
        id="a canary step without pause holds 60s",
    ),
    pytest.param(
        make_isvc("q").resources(requests={"cpu": 2, "memory": "4Gi"}),
        {"spec.resources.requests": {"cpu": 2, "memory": "4Gi"}},
        id="quantities keep their integer or string form",
    ),
    pytest.param(
        make_isvc("n").set("spec.image", None).set("spec.batching", None),
        {"spec.image": None, "spec.batching": None},
        id="explicit nulls mean absent",
    ),
]


@pytest.mark.parametrize(("manifest", "expected"), DEFAULT_CASES)
def test_defaults(manifest: IsvcBuilder, expected: dict[str, Any]) -> None:
    isvc = manifest.isvc()
    actual = {path: _get(isvc, path) for path in expected}
    assert actual == expected


@pytest.mark.parametrize("name", example_names())
def test_every_example_parses(name: str) -> None:
    isvc = parse_object(load_example(name))
    assert isvc.name == load_example(name)["metadata"]["name"]
    assert isvc.spec.model.base_path == load_example(name)["spec"]["model"]["basePath"]


def test_parsed_objects_are_frozen() -> None:
    isvc = make_isvc("f").batching(8).autoscaling(1, 3).isvc()
    for obj, attr in (
        (isvc, "name"),
        (isvc.spec, "replicas"),
        (isvc.spec.model, "base_path"),
        (isvc.spec.batching, "max_batch_size"),
        (isvc.spec.autoscaling, "max_replicas"),
        (isvc.spec.rollout.steps[0], "weight"),
    ):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, attr, 1)
    # Lists become tuples, so no one can append to a parsed spec either.
    assert isinstance(isvc.spec.rollout.steps, tuple)
    assert isinstance(isvc.spec.server.extra_args, tuple)


def test_parsing_does_not_mutate_the_input() -> None:
    manifest = make_isvc("m").gpu(1).batching(16, [8, 16])
    before = manifest.manifest()
    manifest.isvc()
    assert manifest.manifest() == before


# --------------------------------------------------------------------------- validation

_SCHEMES = "use gs://, s3://, hdfs://, pvc://<claim>/<path> or an absolute path"

_INLINE = "spec.model.preflight.requests.inline"


def _golden(text: str) -> IsvcBuilder:
    return make_isvc().set("spec.model.preflight", {"requests": {"inline": text}})


INVALID_CASES = [
    # pre-flight: the inline requests are JSON, which only the operator and `tfleet render` read
    pytest.param(_golden("[{"), [f"{_INLINE}: not JSON: Expecting property name enclosed in double quotes: "
                                 "line 1 column 3 (char 2)"], id="inline golden requests that are not JSON"),
    pytest.param(_golden("[]"), [f"{_INLINE}: the file holds no request: give a JSON array of TF Serving :predict "
                                 "request bodies"], id="no golden request"),
    pytest.param(_golden('[{"instances": [1], "prediction": [2]}]'),
                 [f"{_INLINE}: request 1: unknown key 'prediction': a request has signature_name, instances or "
                  "inputs, and optionally the predictions or outputs it must return"], id="a misspelt expectation"),
    pytest.param(_golden('[{"instances": [1]}, {"inputs": {"x": [1]}, "predictions": [2]}]'),
                 [f'{_INLINE}: request 2: a columnar request ("inputs") is answered with "outputs", not "predictions"'],
                 id="predictions expected of a columnar request"),
    pytest.param(_golden('[{"instances": []}]'), [f'{_INLINE}: request 1: "instances" must be a non-empty list'],
                 id="an empty list of instances"),
    pytest.param(make_isvc().set("spec.model.preflight", {"requests": {"configMapRef": {"name": "g"}}, "tolerance": -0.1}),
                 ["spec.model.preflight.tolerance: must be greater than or equal to 0, got -0.1"],
                 id="a negative tolerance"),
    pytest.param(make_isvc().set("spec.rollout.analysis", {"builtin": {"maxLatencyRatio": 0.5}}),
                 ["spec.rollout.analysis.builtin.maxLatencyRatio: must be greater than or equal to 1, got 0.5"],
                 id="a latency ratio below 1"),
    pytest.param(make_isvc().set("spec.rollout.analysis", {"builtin": {"maxErrorRateIncrease": 2}}),
                 ["spec.rollout.analysis.builtin.maxErrorRateIncrease: must be less than or equal to 1, got 2.0"],
                 id="an error rate increase above 100%"),
    # storage
    pytest.param(make_isvc().base_path("ftp://host/m"), [f'spec.model.basePath: unsupported storage "ftp://": {_SCHEMES}'],
                 id="an ftp base path is not a storage TF Serving reads"),
    pytest.param(make_isvc().base_path("http://host/m"), [f'spec.model.basePath: unsupported storage "http://": {_SCHEMES}'],
                 id="an http base path is refused"),
    pytest.param(make_isvc().base_path("models/resnet"), [f'spec.model.basePath: unsupported storage "models/resnet": {_SCHEMES}'],
                 id="a relative path is refused"),
    pytest.param(make_isvc().base_path("pvc://store"),
                 ['spec.model.basePath: "pvc://store" must have the form pvc://<claim>/<path> with a valid claim name'],
                 id="a pvc path without a path inside the claim is refused"),
    pytest.param(make_isvc().base_path("pvc://store/"),
                 ['spec.model.basePath: "pvc://store/" must have the form pvc://<claim>/<path> with a valid claim name'],
                 id="a pvc path with an empty path inside the claim is refused"),
    pytest.param(make_isvc().base_path("pvc://Model_Store/m"),
                 ['spec.model.basePath: "pvc://Model_Store/m" must have the form pvc://<claim>/<path> with a valid claim name'],
                 id="a pvc claim that is not a DNS label is refused"),
    pytest.param(make_isvc().base_path(""), ["spec.model.basePath: must be at least 1 characters long"],
                 id="an empty base path is refused"),
    # GPU
    pytest.param(make_isvc().gpu(1).image("tensorflow/serving:2.19.0"),
                 ['spec.image: "tensorflow/serving:2.19.0" is not a GPU image, but gpu.count is 1: '
                  "use a tag ending in -gpu (for example tensorflow/serving:2.19.0-gpu)"],
                 id="a GPU request with the CPU image is refused"),
    pytest.param(make_isvc().gpu(2).image("registry.local:5000/serving"),
                 ['spec.image: "registry.local:5000/serving" is not a GPU image, but gpu.count is 2: '
                  "use a tag ending in -gpu (for example tensorflow/serving:2.19.0-gpu)"],
                 id="a registry port is not mistaken for a tag"),
    pytest.param(make_isvc().gpu(17), ["spec.gpu.count: must be less than or equal to 16, got 17"],
                 id="more than 16 GPUs per pod is refused"),
    # ports
    pytest.param(make_isvc().server(grpcPort=9000, restPort=9000),
                 ["spec.server.restPort: restPort (9000) must differ from grpcPort (9000)"],
                 id="gRPC and REST on the same port are refused"),
    pytest.param(make_isvc().server(grpcPort=8501),
                 ["spec.server.restPort: restPort (8501) must differ from grpcPort (8501)"],
                 id="a gRPC port equal to the default REST port is refused"),
    pytest.param(make_isvc().server(grpcPort=8510),
                 ["spec.server.grpcPort: port 8510 is reserved for the health bridge gRPC port; choose another port"],
                 id="the health bridge gRPC port is reserved"),
    pytest.param(make_isvc().server(restPort=8511),
                 ["spec.server.restPort: port 8511 is reserved for the health bridge HTTP port; choose another port"],
                 id="the health bridge HTTP port is reserved"),
    pytest.param(make_isvc().server(grpcPort=70000), ["spec.server.grpcPort: must be less than or equal to 65535, got 70000"],
                 id="a port above 65535 is refused"),
    # unknown fields and types
    pytest.param(make_isvc().set("spec.model.bogus", 1),
                 ["spec.model.bogus: unknown field (known fields: basePath, name, version, credentialsSecret, preflight)"],
                 id="an unknown field in model is named with the known ones"),
    pytest.param(make_isvc().set("spec.replica", 2),
                 ["spec.replica: unknown field (known fields: model, image, replicas, autoscaling, resources, "
                  "gpu, batching, server, service, rollout, pod)"],
                 id="a misspelt spec field is an unknown field"),
    pytest.param(make_isvc().replicas("3"), ['spec.replicas: must be an integer, got string "3"'],
                 id="a quoted number is not an integer"),
    pytest.param(make_isvc().replicas(True), ["spec.replicas: must be an integer, got boolean true"],
                 id="a boolean is not an integer"),
    pytest.param(make_isvc().replicas(2.5), ["spec.replicas: must be an integer, got number 2.5"],
                 id="a fraction is not an integer"),
    pytest.param(make_isvc().headless("yes"), ['spec.service.headless: must be a boolean, got string "yes"'],
                 id="yes in quotes is not a boolean"),
    pytest.param(make_isvc().set("spec.batching", {"maxBatchSize": 4, "allowedBatchSizes": 4}),
                 ["spec.batching.allowedBatchSizes: must be a list, got integer"],
                 id="a scalar where a list belongs is refused"),
    pytest.param(make_isvc().pod(affinity="zone-a"), ["spec.pod.affinity: must be an object, got string"],
                 id="affinity must be an object even though it passes through"),
    pytest.param(make_isvc().set("spec.gpu", 1), ["spec.gpu: must be an object, got integer"],
                 id="gpu as a number instead of an object is refused"),
    # enums, min/max, patterns
    pytest.param(make_isvc().service_type("ExternalName"),
                 ['spec.service.type: must be one of ClusterIP, NodePort, LoadBalancer, got "ExternalName"'],
                 id="an ExternalName service type is refused"),
    pytest.param(make_isvc().set("spec.rollout.strategy", "BlueGreen"),
                 ['spec.rollout.strategy: must be one of Canary, RollingUpdate, got "BlueGreen"'],
                 id="an unknown rollout strategy is refused"),
    pytest.param(make_isvc().pod(tolerations=[{"key": "a", "operator": "In"}]),
                 ['spec.pod.tolerations[0].operator: must be one of Exists, Equal, got "In"'],
                 id="a toleration operator from node affinity is refused"),
    pytest.param(make_isvc().pod(tolerations=[{"key": "spot", "operator": "Exists", "value": "true"}]),
                 ["spec.pod.tolerations[0].value: must be empty when operator is Exists"],
                 id="an Exists toleration with a value"),
    pytest.param(make_isvc().gpu(1, tolerations=[{"value": "x", "effect": "NoSchedule"}]),
                 ["spec.gpu.tolerations[0].operator: must be Exists when key is empty"],
                 id="a keyless toleration that is not Exists"),
    pytest.param(make_isvc().pod(tolerations=[{"key": "a", "operator": "Exists", "effect": "NoSchedule",
                                               "tolerationSeconds": 30}]),
                 ["spec.pod.tolerations[0].tolerationSeconds: may only be set with effect NoExecute"],
                 id="tolerationSeconds without NoExecute"),
    pytest.param(make_isvc().replicas(-1), ["spec.replicas: must be greater than or equal to 0, got -1"],
                 id="negative replicas are refused"),
    pytest.param(make_isvc().version(0), ["spec.model.version: must be greater than or equal to 1, got 0"],
                 id="model version 0 is refused"),
    pytest.param(make_isvc().autoscaling(1, 3, target=101),
                 ["spec.autoscaling.targetCPUUtilizationPercentage: must be less than or equal to 100, got 101"],
                 id="a CPU target above 100 percent is refused"),
    pytest.param(make_isvc().model_name("my model"),
                 ['spec.model.name: "my model" does not match the pattern ^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'],
                 id="a model name with a space is refused"),
    pytest.param(make_isvc().resources(requests={"cpu": "two"}),
                 ['spec.resources.requests.cpu: "two" is not a valid quantity (for example 500m, 2, 4Gi)'],
                 id="a word is not a quantity"),
    pytest.param(make_isvc().resources(limits={"memory": "1K"}),
                 ['spec.resources.limits.memory: "1K" is not a valid quantity (for example 500m, 2, 4Gi)'],
                 id="a binary suffix without i is not a quantity"),
    pytest.param(make_isvc().set("spec.rollout.steps", [{"weight": 10, "pause": "1 minute"}]),
                 ['spec.rollout.steps[0].pause: must be a duration such as 30s, 2m or 1h30m, got "1 minute"'],
                 id="a pause in words is not a duration"),
    # required
    pytest.param(make_isvc().unset("spec.model.basePath"), ["spec.model.basePath: required field is missing"],
                 id="basePath is required"),
    pytest.param(make_isvc().unset("spec.model"), ["spec.model: required field is missing"],
                 id="model is required"),
    pytest.param(make_isvc().set("spec.batching", {"batchTimeoutMicros": 10}),
                 ["spec.batching.maxBatchSize: required field is missing"],
                 id="batching needs maxBatchSize"),
    pytest.param(make_isvc().set("spec.autoscaling", {"minReplicas": 2}),
                 ["spec.autoscaling.maxReplicas: required field is missing"],
                 id="autoscaling needs maxReplicas"),
    pytest.param(make_isvc().unset("spec"), ["spec: required field is missing"], id="spec is required"),
    pytest.param(make_isvc().set("spec", [1]), ["spec: must be an object, got array"], id="spec must be an object"),
    # metadata
    pytest.param(make_isvc("Bad_Name"),
                 ['metadata.name: "Bad_Name" must be a DNS label of at most 52 characters (a-z, 0-9, -) that starts with a letter'],
                 id="a name with capitals and underscores is refused"),
    pytest.param(make_isvc("a" * 53),
                 [f'metadata.name: "{"a" * 53}" must be a DNS label of at most 52 characters (a-z, 0-9, -) that starts with a letter'],
                 id="a name that leaves no room for child suffixes is refused"),
    pytest.param(make_isvc("1model"),
                 ['metadata.name: "1model" must be a DNS label of at most 52 characters (a-z, 0-9, -) that starts with a letter'],
                 id="a name starting with a digit is not a valid Service name"),
    pytest.param(make_isvc().credentials("S3_Creds"),
                 ['spec.model.credentialsSecret: "S3_Creds" does not match the pattern ' + api.OBJECT_NAME_PATTERN],
                 id="a credentials Secret name that no Secret can have"),
    pytest.param(make_isvc().pod(serviceAccountName="Model Reader"),
                 ['spec.pod.serviceAccountName: "Model Reader" does not match the pattern ' + api.OBJECT_NAME_PATTERN],
                 id="a ServiceAccount name that no ServiceAccount can have"),
    pytest.param(make_isvc().gpu(1, resource_name="gpu"),
                 ['spec.gpu.resourceName: "gpu" does not match the pattern ' + api.EXTENDED_RESOURCE_PATTERN],
                 id="a GPU resource name without its vendor domain"),
    pytest.param(make_isvc().unset("metadata.name"), ["metadata.name: required field is missing"],
                 id="metadata.name is required"),
    pytest.param(make_isvc().set("metadata", "demo"),
                 ["metadata: must be an object", "metadata.name: required field is missing"],
                 id="metadata as a string is refused"),
    # extraArgs
    pytest.param(make_isvc().server(extraArgs=["--tensorflow_intra_op_parallelism=2", "--port=9000", "--enable_batching"]),
                 ["spec.server.extraArgs[1]: --port is managed by tfleet and may not be set here",
                  "spec.server.extraArgs[2]: --enable_batching is managed by tfleet and may not be set here"],
                 id="flags tfleet manages may not be repeated in extraArgs"),
    pytest.param(make_isvc().server(extraArgs=["--model_config_file_poll_wait_seconds=5"]),
                 ["spec.server.extraArgs[0]: --model_config_file_poll_wait_seconds is managed by tfleet and may not be set here"],
                 id="the model config poll interval is managed too"),
    # drain vs grace period
    pytest.param(make_isvc().pod(drainSeconds=45),
                 ["spec.pod.drainSeconds: drainSeconds (45) must be less than terminationGracePeriodSeconds (45)"],
                 id="draining as long as the grace period leaves no time to stop"),
    pytest.param(make_isvc().pod(drainSeconds=20, terminationGracePeriodSeconds=10),
                 ["spec.pod.drainSeconds: drainSeconds (20) must be less than terminationGracePeriodSeconds (10)"],
                 id="draining longer than the grace period is refused"),
    # rollout steps
    pytest.param(make_isvc().canary(10, 50, 50),
                 ["spec.rollout.steps[2].weight: step weights must be strictly increasing, but 50 follows 50"],
                 id="a repeated step weight is refused"),
    pytest.param(make_isvc().canary(50, 10),
                 ["spec.rollout.steps[1].weight: step weights must be strictly increasing, but 10 follows 50"],
                 id="a decreasing step weight is refused"),
    pytest.param(make_isvc().canary(0, 101),
                 ["spec.rollout.steps[0].weight: must be greater than or equal to 1, got 0",
                  "spec.rollout.steps[1].weight: must be less than or equal to 100, got 101"],
                 id="step weights stay within 1..100"),
    pytest.param(make_isvc().canary(*range(1, 12)),
                 ["spec.rollout.steps: must have at most 10 items, got 11"],
                 id="more than 10 steps are refused"),
    # autoscaling bounds
    pytest.param(make_isvc().autoscaling(5, 3),
                 ["spec.autoscaling.minReplicas: minReplicas (5) must be less than or equal to maxReplicas (3)"],
                 id="minReplicas above maxReplicas is refused"),
    pytest.param(make_isvc().autoscaling(None, 0),
                 ["spec.autoscaling.maxReplicas: must be greater than or equal to 1, got 0"],
                 id="maxReplicas 0 is refused"),
    # batching
    pytest.param(make_isvc().batching(32, [8, 16]),
                 ["spec.batching.allowedBatchSizes: last size (16) must equal maxBatchSize (32)"],
                 id="the last allowed batch size must equal maxBatchSize"),
    pytest.param(make_isvc().batching(32, [16, 8, 32]),
                 ["spec.batching.allowedBatchSizes: must be strictly increasing, but 8 follows 16"],
                 id="allowed batch sizes must increase"),
    pytest.param(make_isvc().batching(16, [16, 16]),
                 ["spec.batching.allowedBatchSizes: must be strictly increasing, but 16 follows 16"],
                 id="a repeated allowed batch size is refused"),
    pytest.param(make_isvc().batching(32, [0, 32]),
                 ["spec.batching.allowedBatchSizes[0]: must be at least 1, got 0"],
                 id="an allowed batch size of 0 is refused"),
    pytest.param(make_isvc().batching(0), ["spec.batching.maxBatchSize: must be greater than or equal to 1, got 0"],
                 id="maxBatchSize 0 is refused"),
    pytest.param(make_isvc().batching(64, [*range(1, 18), 64]),
                 ["spec.batching.allowedBatchSizes: must have at most 16 items, got 18"],
                 id="more than 16 allowed batch sizes are refused"),
]


@pytest.mark.parametrize(("manifest", "messages"), INVALID_CASES)
def test_validation_messages(manifest: IsvcBuilder, messages: list[str]) -> None:
    with pytest.raises(ValidationError) as info:
        manifest.isvc()
    assert [str(e) for e in info.value.errors] == messages


def test_every_problem_is_reported_at_once() -> None:
    manifest = (
        make_isvc("Bad_Name").base_path("ftp://x/y").replicas(-2).batching(32, [8, 16]).canary(50, 20)
        .set("spec.model.bogus", True)
    )
    with pytest.raises(ValidationError) as info:
        manifest.isvc()
    paths = [e.path for e in info.value.errors]
    assert paths == [
        "metadata.name",
        "spec.model.bogus",
        "spec.model.basePath",
        "spec.replicas",
        "spec.batching.allowedBatchSizes",
        "spec.rollout.steps[1].weight",
    ]


VALID_CASES = [
    pytest.param(make_isvc().base_path("gs://bucket/models/resnet"), id="gs"),
    pytest.param(make_isvc().base_path("s3://bucket/resnet"), id="s3"),
    pytest.param(make_isvc().base_path("hdfs://namenode:8020/models/resnet"), id="hdfs"),
    pytest.param(make_isvc().base_path("pvc://model-store/bert/v2"), id="pvc claim with a nested path"),
    pytest.param(make_isvc().base_path("pvc://models.v1/bert"), id="pvc claim with a dot in its name"),
    pytest.param(make_isvc().credentials("s3.creds-1").pod(serviceAccountName="reader.ml"), id="dotted object names"),
    pytest.param(make_isvc().gpu(1, resource_name="gpu.intel.com/i915"), id="another vendor's GPU resource"),
    pytest.param(make_isvc().base_path("/models/half_plus_two"), id="absolute path baked into the image"),
    pytest.param(make_isvc().gpu(1).image("tensorflow/serving:latest-gpu"), id="latest-gpu tag"),
    pytest.param(make_isvc().gpu(1).image("registry.local:5000/tensorflow/serving:2.19.0-gpu"), id="gpu tag behind a registry port"),
    pytest.param(make_isvc().gpu(1).image("registry.local/serving-gpu:2024.1"), id="an image named for GPUs"),
    pytest.param(make_isvc().image("tensorflow/serving:2.19.0"), id="a CPU image without GPUs"),
    pytest.param(make_isvc().server(grpcPort=9000, restPort=9001), id="custom distinct ports"),
    pytest.param(make_isvc().server(extraArgs=["--tensorflow_intra_op_parallelism=4", "--enable_model_warmup=true"]),
                 id="unmanaged extra flags"),
    pytest.param(make_isvc().pod(drainSeconds=44), id="draining one second less than the grace period"),
    pytest.param(make_isvc().pod(tolerations=[{"operator": "Exists"},
                                              {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                                               "effect": "NoExecute", "tolerationSeconds": 30},
                                              {"key": "pool", "value": "ml", "effect": "NoSchedule"}]),
                 id="tolerations: everything, a NoExecute grace and an implicit Equal"),
    pytest.param(make_isvc().canary(1, 100), id="steps from 1 to 100"),
    pytest.param(make_isvc().canary(), id="no canary steps at all"),
    pytest.param(make_isvc().autoscaling(3, 3), id="minReplicas equal to maxReplicas"),
    pytest.param(make_isvc().batching(32, [32]), id="a single allowed batch size equal to the maximum"),
    pytest.param(make_isvc().resources(requests={"cpu": "500m", "memory": "1.5Gi"}, limits={"cpu": 2, "memory": "2e9"}),
                 id="quantities in every notation"),
    pytest.param(make_isvc().set("spec.rollout.steps", [{"weight": 10, "pause": "1h30m"}]), id="a compound duration"),
    pytest.param(make_isvc().replicas(0), id="scaled to zero"),
    pytest.param(make_isvc("a" * 52), id="a 52-character name"),
]


@pytest.mark.parametrize("manifest", VALID_CASES)
def test_valid_specs_parse(manifest: IsvcBuilder) -> None:
    isvc = manifest.isvc()
    assert isvc.spec.model.base_path == manifest.spec["model"]["basePath"]


def test_parse_spec_names_the_path_it_is_given() -> None:
    with pytest.raises(ValidationError) as info:
        parse_spec({"model": {"basePath": "ftp://x"}}, path="body.spec")
    assert [e.path for e in info.value.errors] == ["body.spec.model.basePath"]


# --------------------------------------------------------------------------- updates

UPDATE_CASES = [
    pytest.param(None, None, [], id="model name unset before and after"),
    pytest.param("resnet", "resnet", [], id="model name unchanged"),
    pytest.param("resnet", "resnet50", ["spec.model.name: is immutable: was resnet, now resnet50"],
                 id="renaming the model is refused"),
    pytest.param(None, "resnet", ["spec.model.name: is immutable: was (unset), now resnet"],
                 id="setting a model name that was unset is refused"),
    pytest.param("resnet", None, ["spec.model.name: is immutable: was resnet, now (unset)"],
                 id="removing the model name is refused"),
]


@pytest.mark.parametrize(("old", "new", "messages"), UPDATE_CASES)
def test_model_name_is_immutable(old: str | None, new: str | None, messages: list[str]) -> None:
    def spec(name: str | None) -> api.InferenceServiceSpec:
        builder = make_isvc("x").version(2)
        if name is not None:
            builder.model_name(name)
        return builder.isvc().spec

    assert [str(e) for e in check_update(spec(old), spec(new))] == messages


def test_other_changes_are_not_update_errors() -> None:
    old = make_isvc("x").version(1).isvc().spec
    new = make_isvc("x").version(2).gpu(1).batching(8).replicas(5).isvc().spec
    assert check_update(old, new) == []
