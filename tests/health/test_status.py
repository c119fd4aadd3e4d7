"""The pure reading of TF Serving's model status: verdicts, messages, the /status document."""

from __future__ import annotations

import json

import pytest

from tfleet.health import protos
from tfleet.health.verdicts import (
    BridgeStatus,
    ModelHealth,
    StatusFormatError,
    VersionStatus,
    health_from_response,
    health_from_rpc_error,
    next_started,
    parse_bridge_status,
    parse_status_json,
    render_status_json,
    verdicts,
)


def v(version: int, state: str, message: str = "", code: str | None = None) -> VersionStatus:
    return VersionStatus(
        version, state, code or ("UNKNOWN" if message else "OK"), error_message=message
    )


def seen(*versions: VersionStatus, pinned: int | None = None) -> ModelHealth:
    return ModelHealth("resnet", expected_version=pinned, reachable=True, versions=versions)


UNREACHABLE = ModelHealth("resnet", reachable=False, error="TF Serving at x is unreachable: boom")
UNKNOWN_MODEL = ModelHealth("resnet", reachable=True, error="TF Serving does not know model resnet")

AVAILABILITY_CASES = [
    # (story, health, available)
    ("an unpinned model with one available version", seen(v(1, "AVAILABLE")), True),
    ("an unpinned model still loading", seen(v(1, "LOADING")), False),
    ("an unpinned model whose new version loads beside the old", seen(v(2, "LOADING"), v(1, "AVAILABLE")), True),
    ("a pinned canary version still loading while the old one serves", seen(v(1, "AVAILABLE"), v(2, "LOADING"), pinned=2), False),
    ("a pinned version that is available", seen(v(1, "AVAILABLE"), v(2, "AVAILABLE"), pinned=2), True),
    ("a pinned version TF Serving has not heard of", seen(v(1, "AVAILABLE"), pinned=3), False),
    ("a pinned version whose load failed", seen(v(2, "END", "Not found: /models/resnet/2"), pinned=2), False),
    ("a version being unloaded", seen(v(1, "UNLOADING")), False),
    ("TF Serving unreachable", UNREACHABLE, False),
    ("a model TF Serving does not know", UNKNOWN_MODEL, False),
    ("an empty answer", seen(), False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("health", "available"),
    [pytest.param(h, a, id=story) for story, h, a in AVAILABILITY_CASES],
)
def test_availability(health: ModelHealth, available: bool) -> None:
    assert health.available is available


VERDICT_CASES = [
    # (story, health, started, draining, expected {"": , readiness, liveness, startup})
    ("loading before the first success", seen(v(1, "LOADING")), False, False,
     {"": False, "readiness": False, "liveness": True, "startup": False}),
    ("available", seen(v(1, "AVAILABLE")), True, False,
     {"": True, "readiness": True, "liveness": True, "startup": True}),
    ("draining while available", seen(v(1, "AVAILABLE")), True, True,
     {"": False, "readiness": False, "liveness": True, "startup": True}),
    ("a later version failed after startup", seen(v(2, "END", "bad"), pinned=2), True, False,
     {"": False, "readiness": False, "liveness": True, "startup": True}),
    ("TF Serving stopped answering", UNREACHABLE, False, False,
     {"": False, "readiness": False, "liveness": False, "startup": False}),
    ("the model is unknown but TF Serving answers", UNKNOWN_MODEL, False, False,
     {"": False, "readiness": False, "liveness": True, "startup": False}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("health", "started", "draining", "expected"),
    [pytest.param(h, s, d, e, id=story) for story, h, s, d, e in VERDICT_CASES],
)
def test_verdicts(
    health: ModelHealth, started: bool, draining: bool, expected: dict[str, bool]
) -> None:
    assert verdicts(health, started=started, draining=draining) == expected


STARTED_CASES = [
    ("turns on when the model first becomes available", False, seen(v(1, "AVAILABLE")), True),
    ("stays off while loading", False, seen(v(1, "LOADING")), False),
    ("stays on when a later version fails", True, seen(v(2, "END", "x"), pinned=2), True),
    ("stays on when the model is unknown for a moment", True, UNKNOWN_MODEL, True),
    ("resets when TF Serving stops answering (a restart)", True, UNREACHABLE, False),
]


@pytest.mark.parametrize(
    ("before", "health", "after"),
    [pytest.param(b, h, a, id=story) for story, b, h, a in STARTED_CASES],
)
def test_startup_latch(before: bool, health: ModelHealth, after: bool) -> None:
    assert next_started(before, health) is after


MESSAGE_CASES = [
    (seen(v(3, "END", "Not found: /models/resnet/3 has no SavedModel"), pinned=3),
     "Version 3 of model resnet failed: Not found: /models/resnet/3 has no SavedModel"),
    (seen(v(3, "LOADING"), v(2, "AVAILABLE"), pinned=3), "Version 3 of model resnet is LOADING"),
    (seen(v(2, "AVAILABLE"), pinned=3),
     "TF Serving has not loaded version 3 of model resnet (2 AVAILABLE)"),
    (seen(v(2, "AVAILABLE"), v(1, "AVAILABLE")), "Version 2 of model resnet is AVAILABLE"),
    (seen(v(1, "START")), "No version of model resnet is AVAILABLE (1 START)"),
    (seen(), "TF Serving reported no versions of model resnet"),
    (UNREACHABLE, "TF Serving at x is unreachable: boom"),
]  # fmt: skip


@pytest.mark.parametrize(("health", "message"), MESSAGE_CASES)
def test_messages_name_the_version_and_carry_tf_servings_error(
    health: ModelHealth, message: str
) -> None:
    assert health.message() == message


def test_load_error_is_the_pinned_versions_error_or_the_newest_failure() -> None:
    assert seen(v(2, "END", "two"), v(1, "AVAILABLE"), pinned=1).load_error == ""
    assert seen(v(2, "END", "two"), pinned=2).load_error == "two"
    assert seen(v(3, "END", "three"), v(2, "END", "two"), v(1, "AVAILABLE")).load_error == "three"
    # A version unloaded normally ends with OK: that is no error.
    assert seen(v(1, "END"), pinned=1).load_error == ""


def test_reads_a_get_model_status_response() -> None:
    response = protos.GetModelStatusResponse()
    ok = response.model_version_status.add(version=2, state=protos.STATES["AVAILABLE"])
    ok.status.error_code = 0
    bad = response.model_version_status.add(version=3, state=protos.STATES["END"])
    bad.status.error_code = protos.ERROR_CODES["NOT_FOUND"]
    bad.status.error_message = "Could not find base path"
    odd = response.model_version_status.add(version=4)
    odd.state = 7  # open enum: a value this code does not know

    health = health_from_response("resnet", 3, response)

    assert health.reachable
    assert health.versions == (
        VersionStatus(2, "AVAILABLE"),
        VersionStatus(3, "END", "NOT_FOUND", "Could not find base path"),
        VersionStatus(4, "UNKNOWN(7)"),
    )
    assert health.load_error == "Could not find base path"


RPC_ERROR_CASES = [
    ("UNAVAILABLE", "connection refused", False, "TF Serving at h:1 is unreachable: connection refused"),
    ("DEADLINE_EXCEEDED", "Deadline Exceeded", False, "TF Serving at h:1 did not answer within 0.5s"),
    ("NOT_FOUND", "Could not find any versions of model m", True,
     "TF Serving does not know model m: Could not find any versions of model m"),
    ("INTERNAL", "Exception deserializing response!", True,
     "TF Serving at h:1 sent a malformed GetModelStatus answer: Exception deserializing response!"),
    ("UNIMPLEMENTED", "", True, "TF Serving at h:1 answered GetModelStatus with UNIMPLEMENTED: "),
]  # fmt: skip


@pytest.mark.parametrize(("code", "details", "reachable", "error"), RPC_ERROR_CASES)
def test_reads_failed_calls(code: str, details: str, reachable: bool, error: str) -> None:
    health = health_from_rpc_error("m", 1, target="h:1", code=code, details=details, timeout=0.5)
    assert (health.reachable, health.error, health.available) == (reachable, error, False)


def test_status_json_round_trips() -> None:
    status = BridgeStatus(
        health=seen(v(3, "END", "bad file", "DATA_LOSS"), v(2, "AVAILABLE"), pinned=3),
        started=True,
        draining=True,
        services={"": False, "readiness": False, "liveness": True, "startup": True},
    )
    text = render_status_json(status)

    assert parse_bridge_status(text) == status
    health = parse_status_json(text)
    assert health.load_error == "bad file"
    assert json.loads(text)["message"] == "Version 3 of model resnet failed: bad file"


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        "{}",
        '{"model": 3}',
        '{"model": "m", "expectedVersion": "3"}',
        '{"model": "m", "versions": [{"state": "AVAILABLE"}]}',
        '{"model": "m", "versions": [{"version": true, "state": "AVAILABLE"}]}',
        '{"model": "m", "reachable": "yes"}',
    ],
)
def test_status_parser_rejects_other_documents(text: str) -> None:
    with pytest.raises(StatusFormatError):
        parse_status_json(text)
