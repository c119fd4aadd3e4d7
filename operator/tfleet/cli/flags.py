"""Flag and argument types shared by every `tfleet` subcommand, with kubectl's habits.

- Durations are Go durations or bare seconds (`tfleet.durations`), the reading the spec's
  durations get too; a bad value names its flag.
- `--kubeconfig`, `--context` and `-n/--namespace` go before or after the subcommand, as
  with kubectl.
- An InferenceService is named `NAME` or `RESOURCE/NAME`, where RESOURCE is any of the CRD's
  names (`tfis`, `inferenceservice`, `inferenceservices`, `InferenceService`), optionally
  with the group (`tfis.tfleet.dev`) or version and group (`tfis.v1alpha1.tfleet.dev`), as
  kubectl's REST mapper accepts them.
- Usage errors exit with EXIT_USAGE, not argparse's 2 (which is "timed out" here).
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import NoReturn

from tfleet.api.vocabulary import GROUP, KIND, PLURAL, VERSION
from tfleet.cli.exits import EXIT_USAGE
from tfleet.durations import EXAMPLES, DurationError, parse_flag_duration

# The CRD's shortNames (tfleet.api.crd.build_crd): a test checks this against the CRD.
SHORT_NAMES = ("tfis",)


class Parser(argparse.ArgumentParser):
    """argparse with the tfleet exit status for usage errors; subparsers inherit it."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def duration(text: str) -> float:
    """A duration flag of zero or more: "90s", "2m", "1h30m", "1.5h" or bare seconds ("30")."""
    try:
        seconds = parse_flag_duration(text)
    except DurationError as exc:
        reason = str(exc).removeprefix("time: ")
        raise argparse.ArgumentTypeError(
            f"{reason}: use a duration {EXAMPLES}, or a number of seconds") from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f'"{text}" is negative: a duration must be 0 or more')
    return seconds


def positive_duration(text: str) -> float:
    """A duration flag that must be more than zero."""
    seconds = duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f'"{text}" must be more than 0 (a duration {EXAMPLES})')
    return seconds


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'"{text}" is not a port number (0-65535)') from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535)")
    return value


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'"{text}" is not a number') from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f'"{text}" must be a number greater than 0')
    return value


def _resource_names() -> frozenset[str]:
    names = {PLURAL, KIND.lower(), *SHORT_NAMES}
    qualified = {f"{n}.{GROUP}" for n in names} | {f"{n}.{VERSION}.{GROUP}" for n in names}
    return frozenset(names | qualified)


ISVC_RESOURCES = _resource_names()
# A Kubernetes object name (DNS subdomain); the API server says the rest.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def isvc_reference(text: str) -> str:
    """The name in `NAME` or `tfis/NAME` (or any other name of the CRD)."""
    name = text
    if "/" in text:
        resource, name = text.split("/", 1)
        if resource.lower() not in ISVC_RESOURCES:
            raise argparse.ArgumentTypeError(
                f'"{text}": "{resource}" is not an InferenceService resource; use NAME or tfis/NAME '
                f"(or {', '.join(sorted({PLURAL, KIND.lower(), *SHORT_NAMES}))})")
    if not _NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(
            f'"{text}": "{name}" is not an object name (lower-case letters, digits, "-" and ".")')
    return name


OUTPUT_FORMATS = ("yaml", "json", "name", "wide")


def add_output_flag(parser: argparse.ArgumentParser, formats: tuple[str, ...], default: str | None,
                    what: str) -> None:
    parser.add_argument(
        "-o", "--output", choices=formats, default=default, metavar="FORMAT",
        help=f"output format of {what}: {', '.join(formats)}" + (f" (default {default})" if default else ""))


# The cluster flags, accepted before the subcommand too (`tfleet -n ml rollout status x`).
# Those given after it win.
CLUSTER_FLAGS = ("kubeconfig", "context", "namespace")


def add_cluster_flags(parser: argparse.ArgumentParser, *, namespace: bool = True, root: bool = False) -> None:
    prefix = "root_" if root else ""
    group = parser.add_argument_group("cluster") if not root else parser
    group.add_argument("--kubeconfig", dest=prefix + "kubeconfig", metavar="FILE", default=None,
                       help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the "
                       "in-cluster service account)")
    group.add_argument("--context", dest=prefix + "context", metavar="NAME", default=None,
                       help="kubeconfig context to use (default: the current context)")
    if namespace:
        group.add_argument("-n", "--namespace", dest=prefix + "namespace", metavar="NS", default=None,
                           help="namespace (default: the context's namespace, then default)")


def merge_root_flags(args: argparse.Namespace) -> None:
    """Cluster flags given before the subcommand fill in those not given after it."""
    for flag in CLUSTER_FLAGS:
        root = getattr(args, "root_" + flag, None)
        if root is not None and getattr(args, flag, None) is None and hasattr(args, flag):
            setattr(args, flag, root)

