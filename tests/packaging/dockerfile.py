"""Reads the Dockerfile's build stage so tests can run its RUN steps without a Docker engine."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Stage:
    name: str | None
    base: str
    instructions: list[tuple[str, str]]  # (INSTRUCTION, arguments), continuation lines joined

    def runs(self) -> list[str]:
        return [args for op, args in self.instructions if op == "RUN"]

    def env(self) -> dict[str, str]:
        """ENV instructions in the `KEY=value KEY=value` form."""
        result: dict[str, str] = {}
        for op, args in self.instructions:
            if op == "ENV":
                for pair in shlex.split(args):
                    key, _, value = pair.partition("=")
                    result[key] = value
        return result


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for every instruction; comments dropped, `\\` lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        pending += line
        op, _, args = pending.partition(" ")
        out.append((op.upper(), args.strip()))
        pending = ""
    return out


def stages(text: str) -> list[Stage]:
    args: dict[str, str] = {}
    result: list[Stage] = []
    for op, rest in instructions(text):
        if op == "ARG" and not result:
            name, _, default = rest.partition("=")
            args[name] = default
        elif op == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            result.append(Stage(name, base, []))
        elif result:
            result[-1].instructions.append((op, rest))
    return result


def localize(command: str, paths: dict[str, str], python: str) -> str:
    """A RUN command with image paths mapped to local ones and `python` to a local interpreter."""
    words = shlex.split(command, posix=True)
    mapped = []
    for word in words:
        if word in ("python", "python3", "python3.11"):
            word = python
        for image_path, local in sorted(paths.items(), key=lambda kv: -len(kv[0])):
            if word == image_path or word.startswith(image_path + "/"):
                word = local + word[len(image_path):]
                break
        mapped.append(word)
    return " ".join(w if w in ("&&", "||", ";") else shlex.quote(w) if "*" not in w else w for w in mapped)


def read(path: Path) -> list[Stage]:
    return stages(path.read_text())
