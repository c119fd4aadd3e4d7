"""The `health-bridge` and `probe` subcommands of `tfleet`.

`add_subcommands(subparsers)` plugs them into the main parser; `main(argv)` runs them
alone (for tests and for `python -m tfleet.health`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

from tfleet.durations import EXAMPLES, DurationError, parse_flag_duration
from tfleet.health.bridge import DEFAULT_PORT, BridgeConfig, HealthBridge, default_http_port
from tfleet.health.golden import DEFAULT_TOLERANCE
from tfleet.health.podspec import DRAIN_TOKEN_ENV, DRAIN_TOKEN_HEADER
from tfleet.health.preflight import DEFAULT_TIMEOUT_SECONDS, PreflightConfig
from tfleet.health.probe_report import EXIT_UNREACHABLE, EXIT_USAGE, probe_exit_code, probe_lines
from tfleet.health.tfs import fetch_once


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'"{text}" is not a port number') from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number")
    return value


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'"{text}" is not a model version (an integer)') from None
    if value < 0:
        raise argparse.ArgumentTypeError("a model version is a non-negative integer")
    return value


def _duration(text: str) -> float:
    """A duration flag: a Go duration ("2s", "500ms", "1m") or bare seconds ("2", "0.5")."""
    try:
        seconds = parse_flag_duration(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(
            f"{str(exc).removeprefix('time: ')}: use a duration {EXAMPLES}, or a number of seconds"
        ) from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f'"{text}" is negative: a duration must be 0 or more')
    return seconds


def _positive(text: str) -> float:
    seconds = _duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f'"{text}" must be more than 0 (a duration {EXAMPLES})')
    return seconds


_non_negative = _duration


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'"{text}" is not a number') from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f'"{text}" must be a finite number, 0 or more')
    return value


def _add_model_args(parser: argparse.ArgumentParser, *, target_default: str | None) -> None:
    parser.add_argument(
        "--target",
        default=target_default,
        required=target_default is None,
        help="TF Serving's gRPC address, HOST:PORT"
        + (f" (default {target_default})" if target_default else ""),
    )
    parser.add_argument("--model", required=True, help="the model name in TF Serving")
    parser.add_argument(
        "--version",
        type=_version,
        default=None,
        help="the version that must be AVAILABLE (default: any version)",
    )


def add_subcommands(subparsers: Any) -> None:
    bridge = subparsers.add_parser(
        "health-bridge",
        help="serve gRPC health for kubelet probes from TF Serving's model status",
        description="Serves grpc.health.v1 (services '', readiness, liveness, startup) from "
        "TF Serving's GetModelStatus, plus GET /status, /drain and /healthz over HTTP.",
    )
    _add_model_args(bridge, target_default="localhost:8500")
    bridge.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"gRPC health port (default {DEFAULT_PORT})",
    )
    bridge.add_argument(
        "--http-port",
        type=_port,
        default=None,
        help="HTTP port for /status, /drain, /healthz (default: --port + 1)",
    )
    bridge.add_argument(
        "--listen", default="", help="address to listen on (default: every interface)"
    )
    bridge.add_argument(
        "--interval", type=_positive, default=1.0, metavar="DURATION",
        help="time between polls: 1s, 500ms, or seconds (default 1s)"
    )
    bridge.add_argument(
        "--timeout", type=_positive, default=1.0, metavar="DURATION",
        help="deadline of each poll (default 1s)"
    )
    bridge.add_argument(
        "--drain-seconds",
        type=_non_negative,
        default=10.0,
        metavar="DURATION",
        help="how long readiness stays NOT_SERVING before a drain completes (default 10s)",
    )
    bridge.add_argument(
        "--drain-token-env",
        default=DRAIN_TOKEN_ENV,
        # From the environment rather than the command line, where `ps` would show it.
        help="environment variable holding a token that /drain requests must carry in the "
        f"{DRAIN_TOKEN_HEADER} header; unset or empty: no token needed "
        f"(default {DRAIN_TOKEN_ENV})",
    )
    bridge.add_argument(
        "--rest-port", type=_port, default=0,
        help="TF Serving's REST port on localhost: its metrics page, and pre-flight requests gRPC "
        "cannot carry (default 0: none)",
    )
    bridge.add_argument(
        "--metrics-path", default="", metavar="PATH",
        help="TF Serving's Prometheus page on the REST port, for GET /traffic (the builtin canary "
        "analysis); default: not read",
    )
    bridge.add_argument(
        "--metrics-interval", type=_positive, default=5.0, metavar="DURATION",
        help="how often the metrics page is read (default 5s)",
    )
    preflight = bridge.add_argument_group(
        "pre-flight", "golden requests the model version must answer (right, when they say what they "
        "must return) before readiness reports SERVING; they also warm the version up")
    preflight.add_argument(
        "--preflight-requests", metavar="FILE", default=None,
        help="a JSON array of TF Serving REST :predict request bodies, each optionally with the "
        '"predictions" or "outputs" it must return (default: no pre-flight)',
    )
    preflight.add_argument(
        "--preflight-tolerance", type=_tolerance, default=DEFAULT_TOLERANCE, metavar="X",
        help="how far an expected number may be off: |got - want| <= X * max(1, |want|) "
        f"(default {DEFAULT_TOLERANCE:g})",
    )
    preflight.add_argument(
        "--preflight-timeout", type=_positive, default=DEFAULT_TIMEOUT_SECONDS, metavar="DURATION",
        help=f"deadline of a whole pre-flight run (default {DEFAULT_TIMEOUT_SECONDS:g}s)",
    )
    bridge.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    bridge.set_defaults(func=run_health_bridge)

    probe = subparsers.add_parser(
        "probe",
        help="ask TF Serving once whether a model version is AVAILABLE",
        description="Prints one line per version with its state and error. Exit status: 0 the "
        f"expected version is AVAILABLE, 1 it is not, {EXIT_USAGE} bad usage, {EXIT_UNREACHABLE} TF "
        "Serving is unreachable.",
    )
    _add_model_args(probe, target_default=None)
    probe.add_argument(
        "--timeout", type=_positive, default=5.0, metavar="DURATION",
        help="deadline: 2s, 500ms, or seconds (default 5s)"
    )
    probe.set_defaults(func=run_probe)


def bridge_config(args: argparse.Namespace) -> BridgeConfig:
    return BridgeConfig(
        target=args.target,
        model=args.model,
        version=args.version,
        port=args.port,
        http_port=args.http_port if args.http_port is not None else default_http_port(args.port),
        listen=args.listen,
        interval=args.interval,
        timeout=args.timeout,
        drain_seconds=args.drain_seconds,
        drain_token=os.environ.get(args.drain_token_env, ""),
        rest_port=args.rest_port,
        metrics_path=args.metrics_path,
        metrics_interval=args.metrics_interval,
        preflight=None if args.preflight_requests is None else PreflightConfig(
            requests_file=args.preflight_requests,
            tolerance=args.preflight_tolerance,
            timeout=args.preflight_timeout,
            rest_port=args.rest_port,
        ),
    )


def run_health_bridge(args: argparse.Namespace) -> int:
    level = logging.getLevelName(str(args.log_level).upper())
    if not isinstance(level, int):
        print(f"error: --log-level: unknown log level {args.log_level!r}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("tfleet.health").setLevel(level)
    try:
        asyncio.run(HealthBridge(bridge_config(args)).serve())
    except OSError as exc:  # a port in use, an address that does not exist
        logging.getLogger("tfleet.health").error("Failed to start health bridge: %s", exc)
        return 1
    except RuntimeError as exc:  # gRPC reports a failed bind this way
        logging.getLogger("tfleet.health").error("Failed to start health bridge: %s", exc)
        return 1
    return 0


def run_probe(args: argparse.Namespace) -> int:
    health = fetch_once(args.target, args.model, args.version, timeout=args.timeout)
    out = sys.stdout if health.reachable else sys.stderr
    for line in probe_lines(health):
        print(line, file=out)
    return probe_exit_code(health)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tfleet")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_subcommands(subparsers)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's usage errors exit 2, help exits 0
        return EXIT_USAGE if exc.code == 2 else int(exc.code or 0)
    return int(args.func(args))
