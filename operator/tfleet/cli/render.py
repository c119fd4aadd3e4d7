"""`tfleet render` and `tfleet crd`: the objects the operator creates, offline.

`-f` takes files, directories and stdin as `kubectl apply -f` does
(k8s.io/cli-runtime/pkg/resource/visitor.go, `ExpandPathsToFileVisitors`): a directory
contributes its files ending in .json, .yaml or .yml, in lexical order, and with `-R` those of
its subdirectories too; a file named explicitly is read whatever its name. InferenceServices
are replaced by their children; documents of any other kind pass through unchanged, so a
GitOps directory that mixes Secrets, Namespaces and InferenceServices renders whole.

`--defaults FILE` renders with the cluster's InferenceServiceDefaults, as the operator does:
the same merge (`tfleet.desired.defaulting`) on the same typed objects.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from tfleet.api.vocabulary import API_VERSION, DEFAULTS_KIND, GROUP, KIND
from tfleet.cli.exits import EXIT_OK, EXIT_TIMEOUT
from tfleet.cli.output import json_document, object_name, print_objects, yaml_documents

if TYPE_CHECKING:
    from tfleet.api.defaults import Defaults

# Exit status of a render with an invalid document or an unreadable file (see tfleet.cli.exits).
EXIT_INVALID = EXIT_TIMEOUT
# The extensions a directory's files must have (cli-runtime's FileExtensions).
FILE_EXTENSIONS = (".json", ".yaml", ".yml")


def dump_manifests(manifests: list[dict[str, Any]]) -> str:
    return yaml_documents(manifests)


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
                     drain_key: bytes | None = None, defaults: Defaults | None = None,
                     notes: list[str] | None = None) -> tuple[list[dict[str, Any]], list[RenderError]]:
    """Every document of `stream` in order, each InferenceService replaced by its children;
    errors name the document and field.

    With `drain_key`, each revision's pods carry the drain token the operator gives a new
    revision (a revision already running keeps the one it was created with). With `defaults`
    (the cluster's InferenceServiceDefaults), they are applied as the operator applies them.
    An InferenceServiceDefaults among the documents is checked and printed unchanged (a note
    in `notes` says it is not applied: `--defaults` applies one).
    """
    from tfleet.api.defaults import BUILT_IN, parse_defaults_object
    from tfleet.api.model import parse_object
    from tfleet.api.schema import ValidationError
    from tfleet.desired import children as builders
    from tfleet.desired import defaulting, health_wiring

    defaults = defaults or BUILT_IN
    bridge_image = defaulting.bridge_image(defaults)

    objects: list[dict[str, Any]] = []
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
        missing = [f"{key}: required field is missing" for key in ("apiVersion", "kind")
                   if not isinstance(doc.get(key), str) or not doc.get(key)]
        if missing:
            errors.extend(RenderError(source, index, m) for m in missing)
            continue
        if str(doc["apiVersion"]).split("/", 1)[0] != GROUP:
            objects.append(doc)  # another kind: passed through unchanged
            continue
        if doc.get("apiVersion") != API_VERSION:
            errors.append(RenderError(source, index, f'apiVersion: must be "{API_VERSION}", got {doc.get("apiVersion")!r}'))
            continue
        if doc.get("kind") == DEFAULTS_KIND:
            try:
                parse_defaults_object(doc)
            except ValidationError as exc:
                errors.extend(RenderError(source, index, str(e)) for e in exc.errors)
                continue
            objects.append(doc)
            if notes is not None:
                notes.append(f"{source}: document {index}: the {DEFAULTS_KIND} is printed as it is, not applied "
                             "to the InferenceServices: render with --defaults FILE for that")
            continue
        if doc.get("kind") != KIND:
            errors.append(RenderError(source, index, f'kind: must be "{KIND}" or "{DEFAULTS_KIND}", '
                                      f'got {doc.get("kind")!r}'))
            continue
        obj = dict(doc)
        if isinstance(obj.get("metadata"), dict) or obj.get("metadata") is None:
            meta = dict(obj.get("metadata") or {})
            meta.setdefault("namespace", namespace or "default")
            obj["metadata"] = meta
        # Other metadata is left for parse_object, which names the field.
        try:
            isvc = defaulting.with_defaults(parse_object(obj), defaults)
        except ValidationError as exc:
            errors.extend(RenderError(source, index, str(e)) for e in exc.errors)
            continue
        rev = builders.compute_revision(isvc)
        token = None if drain_key is None else health_wiring.drain_token(drain_key, isvc.namespace, isvc.name, rev.name)
        extras = builders.PodExtras(drain_token=token, bridge_image=bridge_image)
        objects.extend(builders.build_children(isvc, rev=rev, extras=extras))
    return objects, errors


def expand_paths(path: str, recursive: bool) -> tuple[list[str], str | None]:
    """The files `-f path` stands for, in kubectl's order, or why there are none."""
    if path == "-":
        return ["-"], None
    if not os.path.exists(path):
        return [], f'the path "{path}" does not exist'
    if not os.path.isdir(path):
        return [path], None
    files: list[str] = []

    def walk(directory: str) -> None:
        # filepath.Walk: entries in lexical order, a subdirectory walked where it sorts.
        for entry in sorted(os.listdir(directory)):
            full = os.path.join(directory, entry)
            if os.path.isdir(full):
                if recursive:
                    walk(full)
            elif os.path.splitext(entry)[1] in FILE_EXTENSIONS:
                files.append(full)

    try:
        walk(path)
    except OSError as exc:
        return files, f'error walking "{path}": {exc.strerror}'
    if not files:
        return [], (f'error reading "{path}": recognized file extensions are {", ".join(FILE_EXTENSIONS)}'
                    + ("" if recursive else " (-R reads subdirectories)"))
    return files, None


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


def read_defaults(path: str) -> tuple[Defaults | None, list[str]]:
    """The InferenceServiceDefaults in `path` (its one document), or the problems, each
    naming the flag, the file and the field."""
    from tfleet.api.defaults import parse_defaults_object
    from tfleet.api.schema import ValidationError

    where = f"--defaults: {path}"
    try:
        with open(path, encoding="utf-8") as stream:
            docs = [(i, d, p) for i, d, p in _documents(path, stream) if d is not None or p is not None]
    except OSError as exc:
        return None, [f"{where}: cannot read: {exc.strerror}"]
    except UnicodeDecodeError:
        return None, [f"{where}: cannot read: not UTF-8 text"]
    problems = [p for _, _, p in docs if p is not None]
    if problems:
        return None, [f"{where}: {p}" for p in problems]
    if len(docs) != 1:
        return None, [f"{where}: must hold one {DEFAULTS_KIND} document, holds {len(docs)} documents"]
    doc = docs[0][1]
    if not isinstance(doc, dict):
        return None, [f"{where}: must be a mapping (an object), got {type(doc).__name__}"]
    try:
        return parse_defaults_object(doc), []
    except ValidationError as exc:
        return None, [f"{where}: {e}" for e in exc.errors]


def cmd_render(args: argparse.Namespace) -> int:
    all_objects: list[dict[str, Any]] = []
    failed = False
    drain_key = None
    if args.drain_key_file is not None:
        drain_key, problem = read_drain_key(args.drain_key_file)
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            return EXIT_INVALID
    defaults = None
    if args.defaults is not None:
        defaults, problems = read_defaults(args.defaults)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if defaults is None:
            return EXIT_INVALID
    notes: list[str] = []
    for given in args.filename:
        paths, problem = expand_paths(given, args.recursive)
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            failed = True
        for path in paths:
            try:
                if path == "-":
                    objects, errors = render_documents("<stdin>", sys.stdin, args.namespace, drain_key, defaults, notes)
                else:
                    with open(path, encoding="utf-8") as stream:
                        objects, errors = render_documents(path, stream, args.namespace, drain_key, defaults, notes)
            except OSError as exc:
                print(f"error: {path}: cannot read: {exc.strerror}", file=sys.stderr)
                failed = True
                continue
            except UnicodeDecodeError:
                print(f"error: {path}: cannot read: not UTF-8 text", file=sys.stderr)
                failed = True
                continue
            for error in errors:
                print(f"error: {error}", file=sys.stderr)
            failed = failed or bool(errors)
            all_objects.extend(objects)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    # Valid documents still render; any invalid one makes the exit status EXIT_INVALID.
    if all_objects:
        sys.stdout.write(print_objects(all_objects, args.output))
    return EXIT_INVALID if failed else EXIT_OK


def cmd_crd(args: argparse.Namespace) -> int:
    from tfleet.api.crd import CRD_BUILDERS, crd_yaml

    crd = CRD_BUILDERS[args.kind]()
    if args.output == "json":
        sys.stdout.write(json_document(crd))
    elif args.output == "name":
        print(object_name(crd))
    else:
        sys.stdout.write(crd_yaml(args.kind))
    return EXIT_OK
