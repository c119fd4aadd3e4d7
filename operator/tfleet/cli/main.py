"""The `tfleet` command: run the operator, render manifests offline, print the CRD, probe
health, follow and steer rollouts, send predictions.

Every failure ends in one line on stderr and an exit status of `tfleet.cli.exits`, never in
a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence

from tfleet import __version__
from tfleet.cli import exits
from tfleet.cli.exits import EXIT_INTERRUPTED, EXIT_USAGE, CliError
from tfleet.cli.flags import (
    Parser,
    add_cluster_flags,
    add_output_flag,
    merge_root_flags,
    port,
    positive_duration,
)
from tfleet.cli.render import cmd_crd, cmd_render


def _check_run_configuration(args: argparse.Namespace) -> None:
    """Refuse to start without a cluster to talk to: the operator would retry for ever."""
    from tfleet.cli import cluster

    if args.kubeconfig is None and cluster.in_cluster():
        return  # the runtime prefers the in-cluster service account, as it should in a pod
    target = cluster.resolve(args.kubeconfig, None, "unused")
    cluster.api_client(target)  # certificates, exec plugins: fail now, not in a retry loop


def cmd_run(args: argparse.Namespace) -> int:
    if args.kubeconfig:
        # First of all, before anything imports the kubernetes client (tfleet.runtime.leader
        # does, for one): it reads $KUBECONFIG once, at import, and kopf's login uses that.
        os.environ["KUBECONFIG"] = args.kubeconfig
    if isinstance(args.namespace, str):  # `tfleet -n ns run`: the root flag, one namespace
        args.namespace = [args.namespace]
    if getattr(args, "root_context", None):
        raise CliError(EXIT_USAGE, "tfleet run uses the kubeconfig's current context; --context is not supported",
                       hint="select the context with `kubectl config use-context` or a kubeconfig of its own")
    if args.leader_election:
        from tfleet.runtime.leader import Timing

        try:
            Timing(args.leader_election_lease_duration, args.leader_election_renew_deadline,
                   args.leader_election_retry_period)
        except ValueError as exc:
            raise CliError(EXIT_USAGE, str(exc)) from None
    _check_run_configuration(args)
    from tfleet.runtime import logs
    from tfleet.runtime.operator import RunOptions, run

    logs.configure(args.log_format, args.log_level)
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


def _add_run_options(run: argparse.ArgumentParser) -> None:
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", metavar="NS",
                       help="watch this namespace (repeatable); default: all namespaces")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch all namespaces (the default)")
    run.add_argument("--kubeconfig", metavar="FILE",
                     help="kubeconfig file (default: in-cluster, then $KUBECONFIG, then ~/.kube/config); "
                     "without any, tfleet run exits with status 4")
    run.add_argument("--metrics-port", type=port, default=None, metavar="PORT",
                     help="serve Prometheus metrics on /metrics at this port (default: off)")
    run.add_argument("--health-port", type=port, default=None, metavar="PORT",
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
    election.add_argument("--leader-election-lease-duration", type=positive_duration, default=15.0,
                          metavar="DURATION",
                          help="how long standbys wait after the last renewal before taking over (default: 15s)")
    election.add_argument("--leader-election-renew-deadline", type=positive_duration, default=10.0,
                          metavar="DURATION",
                          help="how long the leader keeps trying to renew before it stops (default: 10s)")
    election.add_argument("--leader-election-retry-period", type=positive_duration, default=2.0,
                          metavar="DURATION", help="time between attempts to acquire or renew (default: 2s)")
    run.set_defaults(func=cmd_run)


DESCRIPTION = """\
tfleet runs fleets of TensorFlow Serving model servers on Kubernetes.

Durations are Go durations (90s, 2m, 1h30m) or a number of seconds. The cluster flags
(--kubeconfig, --context, -n) work before or after the command, as with kubectl.
An InferenceService is NAME or tfis/NAME."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tfleet", description=DESCRIPTION, epilog=exits.epilog(),
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"tfleet {__version__}")
    add_cluster_flags(parser, root=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="run the operator", epilog=exits.epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the operator: watch InferenceServices and reconcile their children and "
        "status. SIGTERM or SIGINT stops it gracefully (in-flight reconciles finish, the leader "
        "Lease is released). Exits with status 4 at once when there is no cluster configuration.")
    _add_run_options(run)

    render = sub.add_parser(
        "render",
        help="print the objects the operator would create for InferenceService manifests",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=exits.epilog(),
        description="Render InferenceService manifests into the Kubernetes objects the operator "
        "creates (owner references aside). Objects of other kinds are printed unchanged, so a "
        "GitOps directory renders whole. Exit status 2 when any document is invalid or a file "
        "cannot be read; valid documents are still printed.",
    )
    render.add_argument("-f", "--filename", action="append", required=True, metavar="PATH",
                        help="a manifest file (any number of documents), a directory (its .yaml, .yml "
                        "and .json files, by name), or - for stdin (repeatable)")
    render.add_argument("-R", "--recursive", action="store_true",
                        help="with a directory -f, also read its subdirectories")
    render.add_argument("--namespace", "-n", help="namespace for InferenceServices that set none (default: default)")
    add_output_flag(render, ("yaml", "json", "name"), "yaml", "the rendered objects")
    render.add_argument("--drain-key-file", metavar="FILE", default=None,
                        help="the drain key (the raw bytes of data.key of the operator's drain key Secret), so "
                        "the pods carry the drain tokens the operator gives a new revision; without it they "
                        "carry none")
    render.add_argument("--defaults", metavar="FILE", default=None,
                        help="the cluster's InferenceServiceDefaults (a file with that one object), applied "
                        "as the operator applies it; without it, the built-in defaults")
    render.set_defaults(func=cmd_render)

    crd = sub.add_parser("crd", help="print a CustomResourceDefinition (InferenceService, or with --kind another)")
    crd.add_argument("--kind", choices=["InferenceService", "InferenceServiceDefaults"], default="InferenceService",
                     help="the kind whose CRD to print (default: InferenceService)")
    add_output_flag(crd, ("yaml", "json", "name"), "yaml", "the CRD")
    crd.set_defaults(func=cmd_crd)

    from tfleet.health.cli import add_subcommands as add_health_subcommands

    add_health_subcommands(sub)

    from tfleet.cli import predict as predict_cli
    from tfleet.cli import rollout as rollout_cli

    rollout_cli.add_subcommands(sub)
    predict_cli.add_subcommands(sub)
    return parser


def _report(error: CliError) -> None:
    print(f"error: {error.message}", file=sys.stderr)
    if error.hint:
        print(f"  {error.hint}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (EXIT_USAGE), --help and --version (0)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    merge_root_flags(args)
    try:
        return int(args.func(args) or 0)
    except CliError as error:
        _report(error)
        return error.code
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `tfleet render ... | head`: the reader left; say nothing more to it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
