"""`tfleet probe` through its CLI function: output lines and exit codes."""

from __future__ import annotations

import pytest

from tests.fakes.tfserving import FakeTFServing
from tfleet.health.cli import main

from .conftest import MODEL


def probe(fake: FakeTFServing, *extra: str, model: str = MODEL) -> list[str]:
    return ["probe", "--target", fake.target, "--model", model, "--timeout", "0.5", *extra]


def test_available_exits_0_with_one_line_per_version(
    fake: FakeTFServing, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.set_version(1, "AVAILABLE")
    fake.set_version(2, "LOADING")
    assert main(probe(fake)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{MODEL}\tversion 2\tLOADING",
        f"{MODEL}\tversion 1\tAVAILABLE",
        f"AVAILABLE: Version 1 of model {MODEL} is AVAILABLE",
    ]


def test_a_pinned_version_still_loading_exits_1(
    fake: FakeTFServing, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.set_version(1, "AVAILABLE")
    fake.set_version(2, "LOADING")
    assert main(probe(fake, "--version", "2")) == 1
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"NOT AVAILABLE: Version 2 of model {MODEL} is LOADING"
    )
    assert main(probe(fake, "--version", "1")) == 0


def test_a_failed_load_exits_1_and_prints_tf_servings_error(
    fake: FakeTFServing, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.set_version(3, "END", error="Could not find base path", error_code="NOT_FOUND")
    assert main(probe(fake, "--version", "3")) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{MODEL}\tversion 3\tEND\tNOT_FOUND: Could not find base path"


def test_an_unknown_model_exits_1(fake: FakeTFServing, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(probe(fake, model="resnet")) == 1
    assert "does not know model resnet" in capsys.readouterr().out


def test_a_server_that_is_down_exits_5(
    fake: FakeTFServing, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.down()
    assert main(probe(fake)) == 5
    assert capsys.readouterr().err.startswith(
        f"UNREACHABLE: TF Serving at {fake.target} is unreachable"
    )


def test_a_server_that_hangs_exits_5_at_the_deadline(
    fake: FakeTFServing, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.set_version(1, "AVAILABLE")
    fake.hang()
    assert main(probe(fake)) == 5
    assert "did not answer within 0.5s" in capsys.readouterr().err


@pytest.mark.parametrize("timeout", ["2s", "500ms", "0.5", "1m"])
def test_the_timeout_takes_go_durations_and_seconds(
    fake: FakeTFServing, capsys: pytest.CaptureFixture[str], timeout: str
) -> None:
    fake.set_version(1, "AVAILABLE")
    argv = ["probe", "--target", fake.target, "--model", MODEL, "--timeout", timeout]
    assert main(argv) == 0, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["probe", "--model", MODEL],  # no target
        ["probe", "--target", "127.0.0.1:1"],  # no model
        ["probe", "--target", "127.0.0.1:1", "--model", MODEL, "--version", "-1"],
        ["probe", "--target", "127.0.0.1:1", "--model", MODEL, "--timeout", "0"],
        ["probe", "--target", "127.0.0.1:1", "--model", MODEL, "--version", "two"],
        ["probe", "--target", "127.0.0.1:1", "--model", MODEL, "--timeout", "2x"],
    ],
)
def test_bad_usage_exits_3(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "usage:" in err
    assert "_positive" not in err and "Traceback" not in err


def test_a_bad_timeout_names_the_flag_and_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "--target", "127.0.0.1:1", "--model", MODEL, "--timeout", "2x"]) == 3
    assert capsys.readouterr().err.splitlines()[-1] == (
        'tfleet probe: error: argument --timeout: unknown unit "x" in duration "2x": '
        "use a duration such as 90s, 2m or 1h30m, or a number of seconds"
    )
