"""`tfleet render` and `tfleet crd`: the objects the operator creates, offline."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import yaml

from tfleet.api.vocabulary import API_VERSION, KIND


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


# A manifest nests a dozen levels; PyYAML's composer recurses once per level, so a deeper
# document would end in a RecursionError instead of an error message.
MAX_YAML_DEPTH = 100
# Aliases let a small file stand for an exponentially large document ("billion laughs").
# PyYAML shares aliased nodes, but every consumer that walks or writes the document (a child
# built from pod.affinity, the YAML written out) expands them. go-yaml v3 (decode.go) refuses
# such documents as "excessive aliasing"; here a document whose aliases expand it beyond this
# many nodes is refused. Documents without aliases are never limited by size.
MAX_EXPANDED_NODES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents nested too deeply or expanding too far through aliases."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_document(self) -> Any:
        self._aliases = 0
        node = super().compose_document()
        if node is not None and self._aliases and _expanded_size(node, {}) > MAX_EXPANDED_NODES:
            raise yaml.composer.ComposerError(
                None, None,
                f"YAML aliases expand to more than {MAX_EXPANDED_NODES} nodes; refusing the document",
                node.start_mark,
            )
        return node

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"YAML nests more than {MAX_YAML_DEPTH} levels deep", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Nodes in the document once every alias is written out (shared nodes counted each time)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    else:
        size = 1
    sizes[id(node)] = size
    return size


def _documents(source: str, stream: TextIO) -> Iterator[tuple[int, Any, str | None]]:
    """(index, document, parse error) for every YAML document of a stream."""
    try:
        for index, doc in enumerate(yaml.load_all(stream, Loader=_BoundedLoader)):
            yield index, doc, None
    except yaml.YAMLError as exc:
        # A syntax error ends the stream: the parser cannot resynchronise after it.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        yield -1, None, f"YAML does not parse{where}: {problem}"


def render_documents(source: str, stream: TextIO, namespace: str | None,
                     drain_key: bytes | None = None) -> tuple[list[dict[str, Any]], list[RenderError]]:
    """Children of every InferenceService in `stream`; errors name the document and field.

    With `drain_key`, each revision's pods carry the drain token the operator gives a new
    revision (a revision already running keeps the one it was created with).
    """
    from tfleet.api.model import parse_object
    from tfleet.api.schema import ValidationError
    from tfleet.desired import children as builders
    from tfleet.desired import health_wiring

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
        rev = builders.compute_revision(isvc)
        token = None if drain_key is None else health_wiring.drain_token(drain_key, isvc.namespace, isvc.name, rev.name)
        children.extend(builders.build_children(isvc, rev=rev, drain_token=token))
    return children, errors


def read_drain_key(path: str) -> tuple[bytes | None, str | None]:
    """The key in `path`, or the reason it cannot be one (naming the flag)."""
    from tfleet.desired.health_wiring import drain_key_problem

    try:
        with open(path, "rb") as stream:
            key = stream.read()
    except OSError as exc:
        return None, f"--drain-key-file: cannot read {path}: {exc.strerror}"
    problem = drain_key_problem(key)
    if problem is not None:
        return None, f"--drain-key-file: {path}: {problem}"
    return key, None


def cmd_render(args: argparse.Namespace) -> int:
    all_children: list[dict[str, Any]] = []
    failed = False
    drain_key = None
    if args.drain_key_file is not None:
        drain_key, problem = read_drain_key(args.drain_key_file)
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    for path in args.filename:
        try:
            if path == "-":
                children, errors = render_documents("<stdin>", sys.stdin, args.namespace, drain_key)
            else:
                with open(path, encoding="utf-8") as stream:
                    children, errors = render_documents(path, stream, args.namespace, drain_key)
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
    from tfleet.api.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0
