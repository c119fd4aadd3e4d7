"""Event names: one per transition of one generation, always a valid object name."""

from __future__ import annotations

import re

from tfleet.api.kubemeta import EVENT_NAME_MAX, event_name

# apimachinery's IsDNS1123Subdomain, which an Event's name must pass.
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")


def valid(name: str) -> bool:
    return len(name) <= EVENT_NAME_MAX and DNS1123_SUBDOMAIN.match(name) is not None


def regarding(name: str = "fraud", generation: int = 3, uid: str = "u-1") -> dict:
    return {"metadata": {"name": name, "generation": generation, "uid": uid}}


def test_the_same_report_gets_the_same_name_and_another_transition_another():
    first = event_name(regarding(), "Normal", "RolloutStarted", "Started rolling out revision abc")
    assert first == event_name(regarding(), "Normal", "RolloutStarted", "Started rolling out revision abc")
    assert first.startswith("fraud.")
    others = {
        event_name(regarding(generation=4), "Normal", "RolloutStarted", "Started rolling out revision abc"),
        event_name(regarding(uid="u-2"), "Normal", "RolloutStarted", "Started rolling out revision abc"),
        event_name(regarding(), "Warning", "RolloutStarted", "Started rolling out revision abc"),
        event_name(regarding(), "Normal", "RolloutSucceeded", "Started rolling out revision abc"),
        event_name(regarding(), "Normal", "RolloutStarted", "Started rolling out revision abd"),
    }
    assert first not in others and len(others) == 5


def test_a_long_name_is_cut_to_a_valid_event_name():
    long = "a" * 240 + "-b." + "c" * 10  # a valid 253-character DNS subdomain
    name = event_name(regarding(name=long[:253]), "Normal", "RolloutStarted", "x")
    assert valid(name), name
    cut_at_dash = "a" * 235 + "-" + "b" * 17
    assert valid(event_name(regarding(name=cut_at_dash), "Normal", "R", "x"))
