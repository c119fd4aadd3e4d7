"""`python -m tests.fakes.tfserving --port N [--script FILE] [--control-port M]`.

The script is YAML or JSON: either a list of events or `{model: NAME, events: [...]}`.
Without a script the model starts with version 1 AVAILABLE (`--versions` changes that).
SIGTERM and SIGINT stop it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import yaml

from tests.fakes.tfserving.control import serve_control
from tests.fakes.tfserving.script import load_script, parse_versions
from tests.fakes.tfserving.server import DEFAULT_MODEL, EventError, FakeTFServing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.tfserving", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="gRPC port (0 picks one)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--model", default=None, help=f"model name (default {DEFAULT_MODEL})")
    parser.add_argument("--script", help="YAML/JSON timeline of events")
    parser.add_argument("--versions", default=None, help="initial versions, e.g. 1:AVAILABLE")
    parser.add_argument("--control-port", type=int, default=None, help="HTTP control endpoint")
    args = parser.parse_args(argv)

    try:
        script_model, events = load_script(args.script) if args.script else (None, [])
        initial = parse_versions(
            args.versions if args.versions is not None else ("" if args.script else "1:AVAILABLE")
        )
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fake = FakeTFServing(
        args.model or script_model or DEFAULT_MODEL, port=args.port, host=args.host
    )
    try:
        for e in initial:
            fake.apply(e)
        fake.start()
        if events:
            fake.timeline(events)
    except EventError as exc:
        print(f"error: {exc}", file=sys.stderr)
        fake.stop()
        return 2
    control = (
        serve_control(fake, args.control_port, args.host) if args.control_port is not None else None
    )
    # The ports on stdout let a parent that passed 0 find them.
    print(
        f"port={fake.port}" + (f" control_port={control.server_port}" if control else ""),
        flush=True,
    )

    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    if control is not None:
        control.shutdown()
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
