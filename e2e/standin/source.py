"""The file-system storage path source: which versions of each model are aspired.

Modelled on tensorflow_serving/sources/storage_path/file_system_storage_path_source.cc:

- a poll first checks that the base path exists (else InvalidArgument "Could not find base
  path <p> for servable <m> with error <status>"), lists its children (files too) and
  keeps those whose name parses as an int64 (absl::SimpleAtoi, so "0003" is version 3);
- `latest {num_versions}` (the default, num_versions at least 1) aspires the highest N,
  `all` every numeric child, `specific {versions}` those listed (a FileExists fast path
  first, then a warning for each listed version not found);
- no version at all logs "No versions of servable ... found under base path ..." and
  aspires nothing, which unloads whatever was loaded;
- one failing servable aborts the whole poll (TF_RETURN_IF_ERROR), logged as
  "FileSystemStoragePathSource encountered a filesystem access error: ...";
- the poll runs at once and then every file_system_poll_wait_seconds; 0 polls exactly once,
  a negative value never polls.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from e2e.standin import logs, storage
from e2e.standin.status import Status, StatusError, invalid_argument

_SIMPLE_ATOI = re.compile(r"\s*[+-]?\d+\s*")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class ServableToMonitor:
    name: str
    base_path: str
    policy: str  # "latest", "all" or "specific"
    num_versions: int = 1
    versions: tuple[int, ...] = ()


def servable_from_model_config(model: Any) -> ServableToMonitor:
    """ServerCore::CreateStoragePathSourceConfig for one ModelConfig."""
    policy = model.model_version_policy
    choice = policy.WhichOneof("policy_choice") or "latest"
    return ServableToMonitor(
        name=model.name,
        base_path=model.base_path,
        policy=choice,
        num_versions=policy.latest.num_versions,
        versions=tuple(policy.specific.versions),
    )


def parse_version(child: str) -> int | None:
    if _SIMPLE_ATOI.fullmatch(child) is None:
        return None
    value = int(child)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


def select_versions(
    servable: ServableToMonitor, children: list[str]
) -> tuple[list[tuple[int, str]], list[str]]:
    """(aspired (version, child directory) pairs, warnings) for one listing. Pure."""
    warnings: list[str] = []
    by_version: dict[int, str] = {}
    for child in children:
        version = parse_version(child)
        if version is None:
            continue
        if version in by_version:
            warnings.append(
                f"Duplicate version directories detected. Version {version} will be loaded "
                f"from {child}, {by_version[version]} will be ignored."
            )
        by_version[version] = child
    aspired: list[tuple[int, str]] = []
    if servable.policy == "all":
        aspired = [(v, c) for c in children if (v := parse_version(c)) is not None]
    elif servable.policy == "specific":
        wanted = set(servable.versions)
        aspired = [(v, c) for v, c in sorted(by_version.items()) if v in wanted]
        found = {v for v, _ in aspired}
        for version in servable.versions:
            if version not in found:
                warnings.append(
                    f"Version {version} of servable {servable.name}, which was requested to be "
                    "served as a 'specific' version in the servable's version policy, was not "
                    "found in the file system"
                )
    else:
        keep = max(servable.num_versions, 1)
        aspired = sorted(by_version.items(), reverse=True)[:keep]
    if not aspired:
        warnings.append(
            f"No versions of servable {servable.name} found under base path "
            f"{servable.base_path}. Did you forget to name your leaf directory as a number "
            "(eg. '/1/')?"
        )
    return aspired, warnings


def poll_servable(servable: ServableToMonitor) -> list[tuple[int, str]]:
    """PollFileSystemForServable: (version, full path) pairs, or StatusError."""
    exists = storage.file_exists(servable.base_path)
    if not exists.ok:
        raise StatusError(
            invalid_argument(
                f"Could not find base path {servable.base_path} for servable {servable.name} "
                f"with error {exists}"
            )
        )
    if servable.policy == "specific":
        if not servable.versions:
            logs.warning(
                f"{logs.FS_SOURCE}:129", f"No specific versions requested for servable {servable.name}."
            )
            return []
        paths = [(v, storage.join(servable.base_path, str(v))) for v in servable.versions]
        if all(storage.file_exists(p).ok for _, p in paths):
            return paths
    children = storage.get_children(servable.base_path)
    aspired, warnings = select_versions(servable, children)
    for warning in warnings:
        logs.warning(f"{logs.FS_SOURCE}:238", warning)
    return [(v, storage.join(servable.base_path, c)) for v, c in aspired]


AspiredVersionsCallback = Callable[[str, list[tuple[int, str]]], None]


class FileSystemStoragePathSource:
    """Polls the configured servables and hands their aspired versions to the manager."""

    def __init__(
        self,
        servables: list[ServableToMonitor],
        poll_wait_seconds: int,
        callback: AspiredVersionsCallback,
    ) -> None:
        self._lock = threading.Lock()
        self._servables = list(servables)
        self._poll_wait_seconds = poll_wait_seconds
        self._callback = callback
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._poll_wait_seconds < 0:
            return  # "never polls": the server waits for its models forever
        self._thread = threading.Thread(
            target=self._run, name="FileSystemStoragePathSource", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            if self._poll_wait_seconds == 0:
                return
            self._stop.wait(self._poll_wait_seconds)

    def poll_once(self) -> None:
        with self._lock:
            servables = list(self._servables)
            try:
                found = [(s.name, poll_servable(s)) for s in servables]
            except StatusError as e:
                logs.error(
                    f"{logs.FS_SOURCE}:406",
                    "FileSystemStoragePathSource encountered a filesystem access error: "
                    f"{e.status.message}",
                )
                return
            for name, versions in found:
                self._callback(name, versions)

    def update_config(self, servables: list[ServableToMonitor]) -> Status:
        """UpdateConfig: models that are gone are un-aspired at once."""
        with self._lock:
            new_names = {s.name for s in servables}
            for old in self._servables:
                if old.name not in new_names:
                    self._callback(old.name, [])
            self._servables = list(servables)
        return Status()

    def stop(self) -> None:
        self._stop.set()
