"""The pod spec pieces, validated strictly against the Kubernetes 1.35 schemas."""

from __future__ import annotations

import argparse
import copy
from typing import Any

import kubernetes_validate
import pytest

from tfleet.health import podspec
from tfleet.health.cli import add_subcommands, bridge_config

K8S = "1.35"


def pod_template(
    *, version: int | None = 3, drain: int = 10, load_timeout: int = 900
) -> dict[str, Any]:
    serving = {
        "name": "tfserving",
        "image": "tensorflow/serving:2.19.0",
        "ports": [{"name": "grpc", "containerPort": 8500}],
        "lifecycle": podspec.serving_lifecycle(bridge_port=8510, drain_seconds=drain),
        **podspec.serving_probes(bridge_port=8510, model_load_timeout_seconds=load_timeout),
    }
    return {
        "metadata": {"labels": {"app": "resnet"}},
        "spec": {
            "terminationGracePeriodSeconds": podspec.termination_grace_seconds(drain),
            "initContainers": [
                podspec.bridge_container(
                    image="ghcr.io/tfleet/tfleet:0.1.0",
                    model_name="resnet",
                    version=version,
                    grpc_port=8500,
                    bridge_port=8510,
                    drain_seconds=drain,
                )
            ],
            "containers": [serving],
        },
    }


def deployment(template: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "resnet", "namespace": "ml"},
        "spec": {"selector": {"matchLabels": {"app": "resnet"}}, "template": template},
    }


@pytest.mark.parametrize("version", [3, None])
def test_a_deployment_with_the_pieces_is_valid_for_1_35(version: int | None) -> None:
    kubernetes_validate.validate(deployment(pod_template(version=version)), K8S, strict=True)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, **pod_template()}
    kubernetes_validate.validate(pod, K8S, strict=True)


def test_strict_validation_would_catch_a_misspelt_field() -> None:
    broken = pod_template()
    broken["spec"]["containers"][0]["readinessProbe"]["grpc"]["serviceName"] = "readiness"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment(broken), K8S, strict=True)


def test_the_bridge_is_a_native_sidecar_with_a_restricted_security_context() -> None:
    c = podspec.bridge_container(image="img", model_name="m", version=1, grpc_port=8500)
    assert c["restartPolicy"] == "Always"
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "health": 8510,
        "health-http": 8511,
    }
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health-http"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


@pytest.mark.parametrize("version", [7, None])
def test_the_bridge_arguments_parse_into_the_matching_config(version: int | None) -> None:
    c = podspec.bridge_container(
        image="img", model_name="resnet", version=version, grpc_port=9000, bridge_port=9100,
        drain_seconds=25,
    )  # fmt: skip
    parser = argparse.ArgumentParser(prog="tfleet")
    add_subcommands(parser.add_subparsers(dest="command"))
    assert c["command"] == ["tfleet"]
    config = bridge_config(parser.parse_args(c["args"]))
    assert (config.target, config.model, config.version) == ("localhost:9000", "resnet", version)
    assert (config.port, config.http_port, config.drain_seconds) == (9100, 9101, 25)
    assert config.listen == ""


def test_probes_ask_the_bridge_for_their_own_service() -> None:
    probes = podspec.serving_probes(bridge_port=9100)
    assert {name: p["grpc"] for name, p in probes.items()} == {
        "startupProbe": {"port": 9100, "service": "startup"},
        "readinessProbe": {"port": 9100, "service": "readiness"},
        "livenessProbe": {"port": 9100, "service": "liveness"},
    }


@pytest.mark.parametrize("load_timeout", [30, 600, 1800, 3601])
def test_startup_allows_the_whole_model_load_timeout(load_timeout: int) -> None:
    startup = podspec.serving_probes(model_load_timeout_seconds=load_timeout)["startupProbe"]
    window = startup["periodSeconds"] * startup["failureThreshold"]
    assert load_timeout <= window < load_timeout + startup["periodSeconds"]


def test_readiness_reacts_within_seconds_and_liveness_tolerates_blips() -> None:
    probes = podspec.serving_probes()
    ready, live = probes["readinessProbe"], probes["livenessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] <= 10
    assert live["failureThreshold"] >= 3


def test_prestop_drains_through_the_bridges_http_port() -> None:
    lifecycle = podspec.serving_lifecycle(bridge_port=9100, drain_seconds=20)
    get = lifecycle["preStop"]["httpGet"]
    # A number: a named port would be looked up among the serving container's own ports.
    assert get["port"] == 9101
    assert get["path"] == "/drain?seconds=20"


@pytest.mark.parametrize("drain", [0, 10, 45])
def test_the_grace_period_outlasts_the_drain(drain: int) -> None:
    assert podspec.termination_grace_seconds(drain) > drain


def test_builders_return_fresh_dicts() -> None:
    a = podspec.serving_probes()
    b = copy.deepcopy(a)
    a["readinessProbe"]["grpc"]["port"] = 1
    assert podspec.serving_probes() == b


def test_a_drain_token_reaches_both_the_bridge_and_the_prestop_hook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bridge = podspec.bridge_container(
        image="img", model_name="m", version=1, grpc_port=8500, drain_token="t0k3n"
    )
    lifecycle = podspec.serving_lifecycle(drain_token="t0k3n")
    assert lifecycle["preStop"]["httpGet"]["httpHeaders"] == [
        {"name": podspec.DRAIN_TOKEN_HEADER, "value": "t0k3n"}
    ]
    template = pod_template()
    template["spec"]["initContainers"] = [bridge]
    template["spec"]["containers"][0]["lifecycle"] = lifecycle
    kubernetes_validate.validate(deployment(template), K8S, strict=True)

    for env in bridge["env"]:
        monkeypatch.setenv(env["name"], env["value"])
    parser = argparse.ArgumentParser(prog="tfleet")
    add_subcommands(parser.add_subparsers(dest="command"))
    assert bridge_config(parser.parse_args(bridge["args"])).drain_token == "t0k3n"


def test_without_a_token_nothing_mentions_one() -> None:
    bridge = podspec.bridge_container(image="img", model_name="m", version=1, grpc_port=8500)
    assert "env" not in bridge
    assert "httpHeaders" not in podspec.serving_lifecycle()["preStop"]["httpGet"]
