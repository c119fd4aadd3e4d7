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
from tfleet.health.podspec import DRAIN_TOKEN_ENV, DRAIN_TOKEN_HEADER
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
