"""`tfleet probe`: ask TF Serving once whether a model is available, for people and CI."""

from __future__ import annotations

from tfleet.health.verdicts import ModelHealth

# The tfleet command's exit statuses (tfleet.cli.exits, which a test keeps equal to these).
EXIT_AVAILABLE = 0
EXIT_NOT_AVAILABLE = 1
EXIT_USAGE = 3
EXIT_UNREACHABLE = 5


def probe_exit_code(health: ModelHealth) -> int:
    if not health.reachable:
        return EXIT_UNREACHABLE
    return EXIT_AVAILABLE if health.available else EXIT_NOT_AVAILABLE


def probe_lines(health: ModelHealth) -> list[str]:
    """One line per version (state and error), then the verdict."""
    lines = [
        f"{health.model}\tversion {v.version}\t{v.state}"
        + (
            f"\t{v.error_code}: {v.error_message}"
            if v.error_code != "OK" or v.error_message
            else ""
        )
        for v in sorted(health.versions, key=lambda v: -v.version)
    ]
    verdict = "AVAILABLE" if health.available else "NOT AVAILABLE"
    if not health.reachable:
        verdict = "UNREACHABLE"
    lines.append(f"{verdict}: {health.message()}")
    return lines
