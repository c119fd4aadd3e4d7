"""Container logs in the CRI format the kubelet reads (pkg/kubelet/kuberuntime/logs):
one file per container instance, one line per entry,
``<RFC 3339 nano time> <stdout|stderr> <F|P> <content>`` (P: a partial line, continued
by the next entry).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO


def rfc3339_nano(t: datetime) -> str:
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}000Z"


@dataclass(frozen=True)
class Entry:
    time: str
    stream: str
    partial: bool
    content: str


def parse_line(line: str) -> Entry | None:
    parts = line.rstrip("\n").split(" ", 3)
    if len(parts) < 3:
        return None
    content = parts[3] if len(parts) == 4 else ""
    return Entry(parts[0], parts[1], parts[2] == "P", content)


def read_entries(path: Path) -> list[Entry]:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [e for e in (parse_line(line) for line in text.splitlines()) if e is not None]


def log_lines(entries: Sequence[Entry], timestamps: bool = False) -> list[str]:
    """The lines ``kubectl logs`` prints: partial entries joined to the entry that ends
    them, each line with its newline; with ``timestamps`` the time of its first part."""
    out: list[str] = []
    pending = ""
    first_time = ""
    for e in entries:
        if not pending:
            first_time = e.time
        pending += e.content
        if e.partial:
            continue
        out.append((f"{first_time} " if timestamps else "") + pending + "\n")
        pending = ""
    if pending:
        out.append((f"{first_time} " if timestamps else "") + pending)
    return out


def select(lines: Sequence[str], tail_lines: int | None, limit_bytes: int | None) -> str:
    """tailLines keeps the last N lines; limitBytes cuts the output after N bytes."""
    chosen = list(lines if tail_lines is None else (lines[-tail_lines:] if tail_lines > 0 else []))
    text = "".join(chosen)
    if limit_bytes is not None:
        data = text.encode()[:limit_bytes]
        text = data.decode(errors="ignore")
    return text


class LogWriter:
    """Copies a container's stdout and stderr into its log file as they come."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("a", buffering=1)
        self._open = 0

    async def copy(self, stream: asyncio.StreamReader, name: str) -> None:
        self._open += 1
        try:
            while True:
                try:
                    chunk = await stream.readline()
                except ValueError:
                    # A line longer than the reader's buffer: pass it on in pieces.
                    chunk = await stream.read(1 << 16)
                if not chunk:
                    break
                text = chunk.decode(errors="replace")
                complete = text.endswith("\n")
                content = text[:-1] if complete else text
                self._file.write(
                    f"{rfc3339_nano(datetime.now(UTC))} {name} {'F' if complete else 'P'} {content}\n"
                )
        finally:
            self._open -= 1
            if self._open == 0:
                self._file.flush()

    def close(self) -> None:
        self._file.close()
