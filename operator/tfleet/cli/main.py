"""The `tfleet` command: run the operator, render manifests offline, print the CRD, probe
health, follow and steer rollouts."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence

from tfleet import __version__
from tfleet.cli.render import cmd_crd, cmd_render


def cmd_run(args: argparse.Namespace) -> int:
    if args.kubeconfig:
        # Before the kubernetes client is imported: it reads $KUBECONFIG once, at import.
        os.environ["KUBECONFIG"] = args.kubeconfig
    from tfleet.runtime import logs
    from tfleet.runtime.operator import RunOptions, run

    logs.configure(args.log_format, args.log_level)
    if args.leader_election:
        from tfleet.runtime.leader import Timing

        try:
            Timing(args.leader_election_lease_duration, args.leader_election_renew_deadline,
                   args.leader_election_retry_period)
        except ValueError as exc:
            print(f"tfleet run: error: {exc}", file=sys.stderr)
            return 2
    return run(RunOptions(
        namespaces=tuple(args.namespace or ()),
        kubeconfig=args.kubeconfig,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        leader_election=args.leader_election,
        lease_namespace=args.leader_election_namespace,
        lease_name=args.leader_election_id,
        lease_duration=args.leader_election_lease_duration,
        renew_deadline=args.leader_election_renew_deadline,
        retry_period=args.leader_election_retry_period,
        max_concurrent_rollouts=args.max_concurrent_rollouts or None,
        drain_key_secret=None if args.no_drain_token else args.drain_key_secret,
        drain_key_namespace=args.drain_key_namespace,
    ))


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535)")
    return value


DEFAULT_MAX_ROLLOUTS = 10


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return value


_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _secret_name(text: str) -> str:
    if len(text) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a Secret name (a lowercase RFC 1123 subdomain)")
    return text


def _namespace_name(text: str) -> str:
    if len(text) > 63 or not _DNS1123_LABEL.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a namespace name (a lowercase RFC 1123 label)")
    return text


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of seconds")
    return value


def _add_run_options(run: argparse.ArgumentParser) -> None:
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", metavar="NS",
                       help="watch this namespace (repeatable); default: all namespaces")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch all namespaces (the default)")
    run.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    run.add_argument("--metrics-port", type=_port, default=None, metavar="PORT",
                     help="serve Prometheus metrics on /metrics at this port (default: off)")
    run.add_argument("--health-port", type=_port, default=None, metavar="PORT",
                     help="serve /healthz (liveness) and /readyz (readiness) at this port (default: off)")
    run.add_argument("--log-format", default="text", choices=["text", "json"],
                     help="text for people, json for log pipelines (one object per line)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument("--max-concurrent-rollouts", type=_count, default=DEFAULT_MAX_ROLLOUTS, metavar="K",
                     help="run at most K rollouts at once; others wait, queued in order, with phase Queued "
                     f"(0: no bound; default: {DEFAULT_MAX_ROLLOUTS}). Promote and abort skip the queue")
    drain = run.add_argument_group("drain tokens (only the preStop hook may drain a serving pod)")
    drain.add_argument("--drain-key-secret", metavar="NAME", default="tfleet-drain-key", type=_secret_name,
                       help="Secret holding the key that serving pods' drain tokens derive from; created when "
                       "missing (default: tfleet-drain-key)")
    drain.add_argument("--drain-key-namespace", metavar="NS", default=None, type=_namespace_name,
                       help="namespace of that Secret (default: $POD_NAMESPACE, then the service account's "
                       "namespace, then default)")
    drain.add_argument("--no-drain-token", action="store_true",
                       help="give new revisions no drain token: anyone who reaches a pod's health bridge can "
                       "drain it")
    election = run.add_argument_group("leader election (run several replicas, one active)")
    election.add_argument("--leader-election", action="store_true",
                          help="reconcile only while holding a coordination.k8s.io/v1 Lease")
    election.add_argument("--leader-election-namespace", metavar="NS", default=None,
                          help="namespace of the Lease (default: $POD_NAMESPACE, then the service "
                          "account's namespace, then default)")
    election.add_argument("--leader-election-id", metavar="NAME", default="tfleet-operator",
                          help="name of the Lease (default: tfleet-operator)")
    election.add_argument("--leader-election-lease-duration", type=_seconds, default=15.0, metavar="SECONDS",
                          help="how long standbys wait after the last renewal before taking over (default: 15)")
    election.add_argument("--leader-election-renew-deadline", type=_seconds, default=10.0, metavar="SECONDS",
                          help="how long the leader keeps trying to renew before it stops (default: 10)")
    election.add_argument("--leader-election-retry-period", type=_seconds, default=2.0, metavar="SECONDS",
                          help="time between attempts to acquire or renew (default: 2)")
    run.set_defaults(func=cmd_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfleet",
        description="tfleet runs fleets of TensorFlow Serving model servers on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"tfleet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="run the operator",
        description="Run the operator: watch InferenceServices and reconcile their children and "
        "status. SIGTERM or SIGINT stops it gracefully (in-flight reconciles finish, the leader "
        "Lease is released).")
    _add_run_options(run)

    render = sub.add_parser(
        "render",
        help="print the objects the operator would create for InferenceService manifests",
        description="Render InferenceService manifests into the Kubernetes objects the operator "
        "creates (owner references aside). Exit status 2 when any document is invalid.",
    )
    render.add_argument("-f", "--filename", action="append", required=True, metavar="FILE",
                        help="manifest file with one or more documents; - reads stdin (repeatable)")
    render.add_argument("--namespace", "-n", help="namespace for documents that set none (default: default)")
    render.add_argument("--drain-key-file", metavar="FILE", default=None,
                        help="the drain key (the raw bytes of data.key of the operator's drain key Secret), so "
                        "the pods carry the drain tokens the operator gives a new revision; without it they "
                        "carry none")
    render.set_defaults(func=cmd_render)

    crd = sub.add_parser("crd", help="print the InferenceService CustomResourceDefinition")
    crd.set_defaults(func=cmd_crd)

    try:
        from tfleet.health.cli import add_subcommands
    except ImportError:  # pragma: no cover - the health package ships with tfleet
        pass
    else:
        add_subcommands(sub)

    from tfleet.cli import rollout as rollout_cli

    rollout_cli.add_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
