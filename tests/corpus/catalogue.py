"""Reads the header comments of the bad manifests in tests/corpus/bad/.

Each file starts with comment lines:

    # <what is wrong>
    # layer: admission | operator | client
    # expect: <field path>: <message>          (one or more)
    # document: <n>                            (the failing document; default 0)
    # render-expect: <message>                 (render's message, when it differs from expect)
    # render: accepts                          (render cannot see it: only the API server can)
    # admission-field: <field path>            (the path the API server names, when it differs)
    # admission-expect: <message>              (words of the API server's refusal: a CEL rule's message)
    # apply: server-side                       (kubectl apply --server-side: a client-side apply
    #                                           would copy the object into an annotation too large)

Each manifest is refused at the earliest layer that can catch it. `admission` is the CRD's
schema and CEL rules (and the API server's own metadata rules): every rule that depends only on
the object is there. `operator` is what only the operator sees: the shape of the schemaless
pod.affinity (CEL cannot see fields a schema does not declare), or the API server refusing a
child. `client` is what no API request is made for: the YAML itself is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

BAD = Path(__file__).resolve().parent / "bad"
LAYERS = ("admission", "operator", "client")


@dataclass(frozen=True)
class BadManifest:
    path: Path
    description: str
    layer: str
    expects: tuple[str, ...]
    document: int
    render_expects: tuple[str, ...]
    render_accepts: bool
    admission_fields: tuple[str, ...]
    admission_expects: tuple[str, ...] = ()
    server_side: bool = False

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def fields(self) -> tuple[str, ...]:
        """The field paths the expected messages name."""
        return tuple(dict.fromkeys(e.split(": ", 1)[0] for e in self.expects))


def _header(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return lines


def parse_header(path: Path) -> BadManifest:
    with path.open(encoding="utf-8") as stream:
        head = []
        for line in stream:
            if not line.startswith("#"):
                break
            head.append(line)
    lines = _header("".join(head))
    values: dict[str, list[str]] = {}
    for line in lines[1:]:
        key, sep, value = line.partition(": ")
        if not sep or not re.fullmatch(r"[a-z-]+", key):
            raise ValueError(f"{path.name}: header line {line!r} is not `key: value`")
        values.setdefault(key, []).append(value)
    layer = values.get("layer", [""])[0]
    if layer not in LAYERS:
        raise ValueError(f"{path.name}: layer {layer!r} is not one of {', '.join(LAYERS)}")
    expects = tuple(values.get("expect", []))
    if not expects:
        raise ValueError(f"{path.name}: no `# expect:` line")
    return BadManifest(
        path=path,
        description=lines[0],
        layer=layer,
        expects=expects,
        document=int(values.get("document", ["0"])[0]),
        render_expects=tuple(values.get("render-expect", [])) or expects,
        render_accepts=values.get("render", [""])[0] == "accepts",
        admission_fields=tuple(values.get("admission-field", [])),
        admission_expects=tuple(values.get("admission-expect", [])),
        server_side=values.get("apply", [""])[0] == "server-side",
    )


def corpus() -> list[BadManifest]:
    return [parse_header(path) for path in sorted(BAD.glob("*.yaml"))]
