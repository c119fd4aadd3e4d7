"""The `tfleet` command: run the operator, render manifests offline, print the CRD, probe health."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import yaml

from tfleet import API_VERSION, KIND, __version__


class _Dumper(yaml.SafeDumper):
    """Plain YAML: repeated values are written out, never as &anchors/*aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_manifests(manifests: list[dict[str, Any]]) -> str:
    return yaml.dump_all(manifests, Dumper=_Dumper, sort_keys=False, width=120)


@dataclass(frozen=True)
class RenderError:
    source: str
    index: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}: document {self.index}: {self.message}"


def _documents(source: str, stream: TextIO) -> Iterator[tuple[int, Any, str | None]]:
    """(index, document, parse error) for every YAML document of a stream."""
    try:
        for index, doc in enumerate(yaml.safe_load_all(stream)):
            yield index, doc, None
    except yaml.YAMLError as exc:
        # A syntax error ends the stream: the parser cannot resynchronise after it.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        yield -1, None, f"YAML does not parse{where}: {problem}"


def render_documents(source: str, stream: TextIO, namespace: str | None) -> tuple[list[dict[str, Any]], list[RenderError]]:
    """Children of every InferenceService in `stream`; errors name the document and field."""
    from tfleet import builders
    from tfleet.api import parse_object
    from tfleet.schema import ValidationError

    children: list[dict[str, Any]] = []
    errors: list[RenderError] = []
    last_index = -1
    for index, doc, problem in _documents(source, stream):
        if problem is not None:
            errors.append(RenderError(source, last_index + 1, problem))
            break
        last_index = index
        if doc is None:
            continue
        if not isinstance(doc, dict):
            errors.append(RenderError(source, index, f"must be a mapping (an object), got {type(doc).__name__}"))
            continue
        if doc.get("apiVersion") != API_VERSION:
            errors.append(RenderError(source, index, f'apiVersion: must be "{API_VERSION}", got {doc.get("apiVersion")!r}'))
            continue
        if doc.get("kind") != KIND:
            errors.append(RenderError(source, index, f'kind: must be "{KIND}", got {doc.get("kind")!r}'))
            continue
        obj = dict(doc)
        if isinstance(obj.get("metadata"), dict) or obj.get("metadata") is None:
            meta = dict(obj.get("metadata") or {})
            meta.setdefault("namespace", namespace or "default")
            obj["metadata"] = meta
        # Other metadata is left for parse_object, which names the field.
        try:
            isvc = parse_object(obj)
        except ValidationError as exc:
            errors.extend(RenderError(source, index, str(e)) for e in exc.errors)
            continue
        children.extend(builders.build_children(isvc))
    return children, errors


def cmd_render(args: argparse.Namespace) -> int:
    all_children: list[dict[str, Any]] = []
    failed = False
    for path in args.filename:
        try:
            if path == "-":
                children, errors = render_documents("<stdin>", sys.stdin, args.namespace)
            else:
                with open(path, encoding="utf-8") as stream:
                    children, errors = render_documents(path, stream, args.namespace)
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
            failed = True
            continue
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        failed = failed or bool(errors)
        all_children.extend(children)
    # Valid documents still render; any invalid one makes the exit status 2.
    if all_children:
        sys.stdout.write(dump_manifests(all_children))
    return 2 if failed else 0


def cmd_crd(args: argparse.Namespace) -> int:
    from tfleet.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.kubeconfig:
        # Before the kubernetes client is imported: it reads $KUBECONFIG once, at import.
        os.environ["KUBECONFIG"] = args.kubeconfig

    import logging

    import kopf

    from tfleet import handlers  # noqa: F401  (registers the handlers)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    namespaces = args.namespace or []
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        memo=kopf.Memo(kubeconfig=args.kubeconfig),
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfleet",
        description="tfleet runs fleets of TensorFlow Serving model servers on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"tfleet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the operator")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", metavar="NS",
                       help="watch this namespace (repeatable); default: all namespaces")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch all namespaces (the default)")
    run.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    run.add_argument("--health-port", type=int, default=None, help="serve /healthz on this port")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=cmd_run)

    render = sub.add_parser(
        "render",
        help="print the objects the operator would create for InferenceService manifests",
        description="Render InferenceService manifests into the Kubernetes objects the operator "
        "creates (owner references aside). Exit status 2 when any document is invalid.",
    )
    render.add_argument("-f", "--filename", action="append", required=True, metavar="FILE",
                        help="manifest file with one or more documents; - reads stdin (repeatable)")
    render.add_argument("--namespace", "-n", help="namespace for documents that set none (default: default)")
    render.set_defaults(func=cmd_render)

    crd = sub.add_parser("crd", help="print the InferenceService CustomResourceDefinition")
    crd.set_defaults(func=cmd_crd)

    try:
        from tfleet.health.cli import add_subcommands
    except ImportError:  # pragma: no cover - the health package ships with tfleet
        pass
    else:
        add_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
