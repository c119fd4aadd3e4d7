"""Golden request files and the comparison of answers with what they expect (pure)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from tfleet.health.golden import (
    MAX_REQUESTS,
    GoldenError,
    first_difference,
    mismatch,
    parse_requests,
)


def test_a_file_of_requests_in_tf_servings_rest_format() -> None:
    (row, columnar, bare) = parse_requests(json.dumps([
        {"signature_name": "classify", "instances": [[1, 2]], "predictions": [[0.5]]},
        {"inputs": {"x": [1.0], "k": [2]}, "outputs": {"y": [3.0]}},
        {"instances": [1.0]},
    ]))
    assert (row.index, row.signature, row.form, row.expected_key, row.expected) == (0, "classify", "row",
                                                                                      "predictions", [[0.5]])
    assert row.body == {"signature_name": "classify", "instances": [[1, 2]]}  # what is sent: no expectation
    assert (columnar.signature, columnar.form, columnar.expected_key) == ("serving_default", "columnar", "outputs")
    assert (bare.expected_key, bare.expected) == (None, None)
    # One request on its own is a file of one.
    assert len(parse_requests('{"instances": [1.0]}')) == 1


@pytest.mark.parametrize(("text", "error"), [
    ("", "not JSON: Expecting value: line 1 column 1 (char 0)"),
    ("[]", "the file holds no request: give a JSON array of TF Serving :predict request bodies"),
    ("[1]", 'request 1: must be a JSON object with "instances" or "inputs", not a number'),
    ('[{"instances": [1]}, {}]', 'request 2: needs exactly one of "instances" (row format) and "inputs" '
                                 "(columnar format)"),
    ('[{"instances": [1], "inputs": [1]}]', 'request 1: needs exactly one of "instances" (row format) and '
                                            '"inputs" (columnar format)'),
    ('[{"instances": {"x": 1}}]', 'request 1: "instances" must be a non-empty list'),
    ('[{"instances": [1], "predictions": [1], "outputs": [1]}]', 'request 1: give "predictions" or "outputs", '
                                                                 "not both"),
    ('[{"instances": [1], "outputs": [1]}]', 'request 1: a row-format request ("instances") is answered with '
                                             '"predictions", not "outputs"'),
    ('[{"instances": [1], "signature_name": ""}]', 'request 1: "signature_name" must be a non-empty string'),
    ('[{"instances": [1], "expected": [1]}]', "request 1: unknown key 'expected': a request has signature_name, "
                                              "instances or inputs, and optionally the predictions or outputs it "
                                              "must return"),
    (json.dumps([{"instances": [1]}] * (MAX_REQUESTS + 1)), f"{MAX_REQUESTS + 1} requests: at most {MAX_REQUESTS} "
                                                            "are allowed"),
])
def test_unusable_files_are_refused_naming_the_request_and_the_rule(text: str, error: str) -> None:
    with pytest.raises(GoldenError) as info:
        parse_requests(text)
    assert str(info.value) == error


@pytest.mark.parametrize(("got", "want", "tolerance", "difference"), [
    ([2.5, 3.0], [2.5, 3.0], 0.0, None),
    ([0.50001], [0.5], 1e-4, None),  # absolute up to 1
    ([0.5002], [0.5], 1e-4, "p[0] is 0.5002, expected 0.5"),
    ([12345.6], [12345.0], 1e-4, None),  # relative above 1: 0.6 of 12345 is within 1e-4
    ([12347.0], [12345.0], 1e-4, "p[0] is 12347.0, expected 12345.0"),
    ([1], [1.0], 0.0, None),  # an integer answer for a float expectation
    ([math.nan], [math.nan], 0.0, None),
    ([math.inf], [math.inf], 0.0, None),
    ([1.0], [math.inf], 1.0, "p[0] is 1.0, expected Infinity"),
    ([[1.0, 2.0]], [[1.0]], 0.0, "p[0] has 2 entries, expected 1"),
    ([1.0], [[1.0]], 0.0, "p[0] is 1.0, expected a list of 1"),
    ([{"y": 1.0, "z": 2}], [{"y": 1.0}], 0.0, "p[0] has the keys y, z, expected y"),
    ([{"y": [1.0, 5.0]}], [{"y": [1.0, 2.0]}], 0.1, "p[0].y[1] is 5.0, expected 2.0"),
    (["cat"], ["cat"], 0.0, None),
    (["cat"], ["dog"], 0.0, 'p[0] is "cat", expected "dog"'),
    ([True], [1], 0.0, "p[0] is true, expected the number 1"),
    ([1], [True], 0.0, "p[0] is 1, expected true"),
    ([None], [None], 0.0, None),
])
def test_answers_are_compared_within_the_tolerance(got: Any, want: Any, tolerance: float,
                                                   difference: str | None) -> None:
    assert first_difference(got, want, tolerance, "p") == difference


def test_a_mismatch_says_where_what_came_back_and_what_was_expected() -> None:
    (request,) = parse_requests('[{"instances": [[1.0, 2.0]], "predictions": [[2.5, 9.0]]}]')
    assert mismatch(request, {"predictions": [[2.5, 3.0]]}, 1e-5) == (
        "predictions[0][1] is 3.0, expected 9.0 (tolerance 1e-05); returned [[2.5, 3.0]], expected [[2.5, 9.0]]")
    assert mismatch(request, {"outputs": [[2.5, 3.0]]}, 1e-5) == (
        "the answer has no 'predictions': {\"outputs\": [[2.5, 3.0]]}")
    assert mismatch(request, {"predictions": [[2.5, 9.0]]}, 1e-5) is None
    (unchecked,) = parse_requests('[{"instances": [1.0]}]')
    assert mismatch(unchecked, {"predictions": "anything"}, 0.0) is None
    # Long answers are quoted in part.
    (big,) = parse_requests(json.dumps([{"instances": [1.0], "predictions": [0.0] * 500}]))
    message = mismatch(big, {"predictions": [1.0] * 500}, 0.0)
    assert message is not None and message.startswith("predictions[0] is 1.0, expected 0.0")
    assert len(message) < 700 and "..." in message
