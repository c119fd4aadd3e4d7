"""`make help`: every target with its description, in colour only on a terminal."""

from __future__ import annotations

import os
import pty
import re
import subprocess

from tests.packaging.helm import ROOT

MAKEFILE = ROOT / "Makefile"


def phony_targets() -> list[str]:
    """Every target the Makefile declares .PHONY: the ones people run."""
    names = []
    for line in MAKEFILE.read_text().splitlines():
        if line.startswith(".PHONY:"):
            names.extend(line.split(":", 1)[1].split())
    return names


def make_help(env: dict[str, str] | None = None) -> str:
    result = subprocess.run(["make", "--no-print-directory", "-s", "help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr
    return result.stdout


def make_help_on_a_terminal(env: dict[str, str] | None = None) -> str:
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(["make", "--no-print-directory", "-s", "help"], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=secondary, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    os.close(secondary)
    output = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        output += chunk
    os.close(primary)
    assert proc.wait(timeout=60) == 0
    return output.decode()


def test_make_help_into_a_pipe_is_plain_text_and_lists_every_target():
    out = make_help()
    assert "\x1b" not in out, "colour codes written into a pipe"
    listed = {}
    for line in out.splitlines():
        match = re.fullmatch(r"  (\S+) +(\S.*)", line)
        assert match, f"not a target line: {line!r}"
        listed[match.group(1)] = match.group(2)
    targets = phony_targets()
    assert targets and sorted(listed) == sorted(targets), "every .PHONY target, and only those, with its description"
    assert "e2e-kind" in listed and "chart-verify" in listed
    assert "KEEP=1" in listed["demo"]


def test_make_help_on_a_terminal_is_in_colour_unless_no_color_is_set():
    coloured = make_help_on_a_terminal()
    assert "\x1b[36mdemo" in coloured
    plain = make_help_on_a_terminal({"NO_COLOR": "1"})
    assert "\x1b" not in plain and "  demo " in plain
