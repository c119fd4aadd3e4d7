"""Drain tokens: derived per revision from the operator's key, put into the pod spec twice (the
health bridge's environment and the preStop hook's header), and kept by a running revision
whatever happens to the key, so that nothing rolls by itself."""

from __future__ import annotations

import copy
import hashlib
import hmac
from datetime import datetime
from typing import Any

import pytest

from tfleet.api.times import format_time
from tfleet.api.vocabulary import SERVING_CONTAINER
from tfleet.desired import children as builders
from tfleet.desired import health_wiring
from tfleet.engine import plan as reconcile
from tfleet.engine.plan import ChildKey, plan_children, plan_status
from tfleet.health import podspec

from .isvc_factory import IsvcBuilder, as_stored, make_isvc

NOW = datetime(2026, 1, 1, 0, 0, 0)
LATER = datetime(2026, 1, 1, 0, 1, 0)
KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))

Manifest = dict[str, Any]


def bridge_token(deployment: Manifest) -> str | None:
    (bridge,) = [c for c in deployment["spec"]["template"]["spec"]["initContainers"]
                 if c["name"] == podspec.BRIDGE_CONTAINER_NAME]
    values = [e["value"] for e in bridge.get("env") or [] if e["name"] == podspec.DRAIN_TOKEN_ENV]
    assert len(values) <= 1
    return values[0] if values else None


def header_token(deployment: Manifest) -> str | None:
    (serving,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == SERVING_CONTAINER]
    get = serving["lifecycle"]["preStop"]["httpGet"]
    values = [h["value"] for h in get.get("httpHeaders") or [] if h["name"] == podspec.DRAIN_TOKEN_HEADER]
    assert len(values) <= 1
    return values[0] if values else None


def the_token(deployment: Manifest) -> str | None:
    """The pod's token; the bridge and the hook must agree on it."""
    token = bridge_token(deployment)
    assert header_token(deployment) == token, "the preStop hook must send the token the bridge expects"
    return token


def deployments(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == "Deployment"]


def converged(manifest: IsvcBuilder, drain_key: bytes | None) -> tuple[Manifest, dict[ChildKey, Manifest]]:
    """The InferenceService and its children after a first reconcile, as read back."""
    body = manifest.manifest()
    first = plan_children(body, {}, [], NOW, drain_key=drain_key)
    children = {reconcile.child_key(m): as_stored(m) for m in first.apply}
    written = plan_status(body, children, [], reconcile_text(NOW), first.rollout)
    assert written.status is not None
    body = copy.deepcopy(body)
    body["status"] = written.status
    return body, children


def reconcile_text(moment: datetime) -> str:
    return format_time(moment)


# --------------------------------------------------------------------------- derivation


def test_a_token_is_the_truncated_hmac_of_namespace_name_and_revision():
    token = health_wiring.drain_token(KEY, "ml", "fraud", "abc123")
    assert token == hmac.new(KEY, b"ml/fraud/abc123", hashlib.sha256).hexdigest()[:32]
    assert len(token) == health_wiring.DRAIN_TOKEN_HEX_CHARS
    assert health_wiring.drain_token(KEY, "ml", "fraud", "abc123") == token


@pytest.mark.parametrize(("key", "namespace", "name", "revision"), [
    (OTHER_KEY, "ml", "fraud", "abc123"),
    (KEY, "ml-staging", "fraud", "abc123"),
    (KEY, "ml", "fraud2", "abc123"),
    (KEY, "ml", "fraud", "abc124"),
], ids=["key", "namespace", "name", "revision"])
def test_every_part_changes_the_token(key, namespace, name, revision):
    # Namespaces and names cannot hold "/", so the message names one object only.
    assert health_wiring.drain_token(key, namespace, name, revision) != health_wiring.drain_token(
        KEY, "ml", "fraud", "abc123")


def test_a_short_key_is_refused_with_its_length():
    assert health_wiring.drain_key_problem(b"x" * 16) is None
    assert health_wiring.drain_key_problem(b"x" * 15) == "a drain key needs at least 16 bytes, this one has 15"


# --------------------------------------------------------------------------- pod spec


def test_the_bridge_and_the_pre_stop_hook_carry_the_same_token():
    isvc = make_isvc("fraud").version(2).isvc()
    (dep,) = deployments(builders.build_children(isvc, extras=builders.PodExtras(drain_token="0123456789abcdef0123456789abcdef")))
    assert bridge_token(dep) == header_token(dep) == "0123456789abcdef0123456789abcdef"
    # The hook still reaches the bridge's HTTP port and waits out the drain.
    (serving,) = dep["spec"]["template"]["spec"]["containers"]
    get = serving["lifecycle"]["preStop"]["httpGet"]
    assert (get["port"], get["path"]) == (8511, f"/drain?seconds={isvc.spec.pod.drain_seconds}")


def test_without_a_token_the_pods_carry_none():
    (dep,) = deployments(builders.build_children(make_isvc("fraud").isvc()))
    assert bridge_token(dep) is None and header_token(dep) is None
    assert "env" not in dep["spec"]["template"]["spec"]["initContainers"][0]


def test_the_revision_does_not_depend_on_the_token():
    isvc = make_isvc("fraud").version(2).isvc()
    rev = builders.compute_revision(isvc)
    plain = builders.build_deployment(isvc, rev=rev)
    tokened = builders.build_deployment(isvc, rev=rev, extras=builders.PodExtras(drain_token="f" * 32))
    assert plain["metadata"]["name"] == tokened["metadata"]["name"] == f"fraud-{rev.name}"
    with_key = plan_children(make_isvc("fraud").version(2).manifest(), {}, [], NOW, drain_key=KEY)
    without = plan_children(make_isvc("fraud").version(2).manifest(), {}, [], NOW)
    assert [m["metadata"]["name"] for m in with_key.apply] == [m["metadata"]["name"] for m in without.apply]
    assert with_key.rollout == without.rollout


# --------------------------------------------------------------------------- reconcile


def test_a_new_revision_gets_the_token_of_the_key():
    manifest = make_isvc("fraud").version(2)
    (dep,) = deployments(plan_children(manifest.manifest(), {}, [], NOW, drain_key=KEY).apply)
    rev = builders.compute_revision(manifest.isvc()).name
    assert the_token(dep) == health_wiring.drain_token(KEY, "ml", "fraud", rev)


def test_the_second_pass_and_a_restarted_operator_write_nothing():
    body, children = converged(make_isvc("fraud").version(2).replicas(2), KEY)
    # The same key (a restarted operator reads it from its Secret) renders the same pods.
    again = plan_children(body, children, [], LATER, drain_key=KEY)
    assert (again.apply, again.scale, again.delete) == ([], [], [])


@pytest.mark.parametrize("drain_key", [OTHER_KEY, None], ids=["another key", "tokens off"])
def test_a_lost_key_or_tokens_turned_off_roll_nothing(drain_key):
    body, children = converged(make_isvc("fraud").version(2).replicas(2), KEY)
    again = plan_children(body, children, [], LATER, drain_key=drain_key)
    assert again.writes == 0, [m["metadata"]["name"] for m in again.apply]


def test_a_deployment_from_before_tokens_keeps_running_without_one():
    body, children = converged(make_isvc("fraud").version(2).replicas(2), None)
    again = plan_children(body, children, [], LATER, drain_key=KEY)
    assert again.writes == 0


def test_after_a_key_change_the_next_revision_gets_the_new_keys_token():
    manifest = make_isvc("fraud").version(2).replicas(2).canary(50)
    body, children = converged(manifest, KEY)
    old_rev = builders.compute_revision(manifest.isvc()).name
    bumped = copy.deepcopy(body)
    bumped["spec"]["model"]["version"] = 3
    bumped["metadata"]["generation"] = 2
    result = plan_children(bumped, children, [], LATER, drain_key=OTHER_KEY)
    new_rev = builders.compute_revision(manifest.clone().version(3).isvc()).name
    (dep,) = deployments(result.apply)
    assert dep["metadata"]["name"] == f"fraud-{new_rev}"
    assert the_token(dep) == health_wiring.drain_token(OTHER_KEY, "ml", "fraud", new_rev)
    # The stable revision is scaled at most, never rebuilt: its pods keep the old key's token.
    assert all(d["metadata"]["name"] != f"fraud-{old_rev}" for d in deployments(result.apply))


def test_a_rolling_update_gives_the_new_revision_its_own_token():
    manifest = make_isvc("fraud").version(2).replicas(2).rolling_update()
    body, children = converged(manifest, KEY)
    bumped = copy.deepcopy(body)
    bumped["spec"]["model"]["version"] = 3
    bumped["metadata"]["generation"] = 2
    (dep,) = deployments(plan_children(bumped, children, [], LATER, drain_key=KEY).apply)
    new_rev = builders.compute_revision(manifest.clone().version(3).isvc()).name
    # One Deployment rolled in place: the old revision's token is not carried over.
    assert dep["metadata"]["name"] == "fraud"
    assert the_token(dep) == health_wiring.drain_token(KEY, "ml", "fraud", new_rev)


def test_an_edited_header_is_reverted_to_the_bridges_token():
    body, children = converged(make_isvc("fraud").version(2), KEY)
    (key,) = [k for k in children if k[0] == "Deployment"]
    kept = the_token(children[key])
    serving = children[key]["spec"]["template"]["spec"]["containers"][0]
    serving["lifecycle"]["preStop"]["httpGet"]["httpHeaders"][0]["value"] = "guess"
    (dep,) = plan_children(body, children, [], LATER, drain_key=KEY).apply
    assert the_token(dep) == kept


@pytest.mark.parametrize("value", ["not a token", "ABCDEF0123456789", "0" * 65])
def test_a_token_tfleet_would_not_write_is_replaced_by_the_derived_one(value):
    manifest = make_isvc("fraud").version(2)
    body, children = converged(manifest, KEY)
    (key,) = [k for k in children if k[0] == "Deployment"]
    bridge = children[key]["spec"]["template"]["spec"]["initContainers"][0]
    bridge["env"][0]["value"] = value
    (dep,) = plan_children(body, children, [], LATER, drain_key=KEY).apply
    rev = builders.compute_revision(manifest.isvc()).name
    assert the_token(dep) == health_wiring.drain_token(KEY, "ml", "fraud", rev)


def test_kept_drain_token_reads_the_bridges_environment():
    isvc = make_isvc("fraud").isvc()
    with_token = builders.build_deployment(isvc, extras=builders.PodExtras(drain_token="ab" * 16))
    assert health_wiring.kept_drain_token(with_token) == "ab" * 16
    assert health_wiring.kept_drain_token(builders.build_deployment(isvc)) == ""
    assert health_wiring.kept_drain_token({"spec": {"template": {"spec": {"initContainers": []}}}}) is None
    assert health_wiring.kept_drain_token({}) is None
