"""A container's first moments, run as PID 1 of the container's new PID, mount and UTS
namespaces (``unshare --pid --fork --mount --uts --mount-proc``, inside the pod's network
namespace): bind-mount the image's files and the volumes at their paths, make the root
read-only if asked, set the hostname, then exec the container's command, which becomes
PID 1 itself.

This file is run by path with the standard library only. Its one argument is a JSON file:
``{"argv", "env", "working_dir", "hostname", "image_root", "image_files", "mounts":
[{"source", "target", "read_only", "is_file"}], "read_only_root", "error_fd"}``.

When the command cannot be started, the reason goes to the ``error_fd`` pipe and the
process exits with 128, which the runtime reports as the container's StartError, as
containerd does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import socket
import sys

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]


def _mount(source: str | None, target: str, flags: int) -> None:
    rc = _libc.mount(source.encode() if source else None, target.encode(), None, flags, None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def bind(source: str, target: str, read_only: bool) -> None:
    _mount(source, target, MS_BIND | MS_REC)
    if read_only:
        _mount(None, target, MS_REMOUNT | MS_BIND | MS_RDONLY)


def ensure_mount_point(target: str, is_file: bool) -> None:
    """Mount points that do not exist on the host are created there (an empty directory
    or file): the container shares the host's root filesystem."""
    if os.path.lexists(target):
        return
    if is_file:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "a"):
            pass
    else:
        os.makedirs(target, exist_ok=True)


def _free_directory(path: str) -> bool:
    """A directory that is missing on the host, or empty there: the image's directory can
    cover it whole without hiding anything of the host."""
    if not os.path.lexists(path):
        return True
    try:
        return os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path)
    except OSError:
        return False


def plan_image(image_root: str, files: list[str]) -> list[tuple[str, str, bool]]:
    """(source, target, is_file) for the image's files: under the highest directory the
    host lacks (or has empty), that directory is bound whole; otherwise the file itself."""
    covered: list[str] = []
    plan: list[tuple[str, str, bool]] = []
    for path in sorted(files):
        if any(path == d or path.startswith(d + "/") for d in covered):
            continue
        parts = path.strip("/").split("/")
        current = ""
        placed = False
        for part in parts[:-1]:
            current += "/" + part
            if _free_directory(current):
                plan.append((image_root + current, current, False))
                covered.append(current)
                placed = True
                break
        if not placed:
            plan.append((image_root + path, path, True))
    return plan


def main(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    # Every source is opened before anything is mounted: a volume mounted at /tmp must not
    # hide the sources of the mounts after it (the runtime keeps its files under /tmp).
    # Start errors go to a pipe the runtime reads: a file open for writing would keep the
    # root from being remounted read-only (EBUSY). The container's command does not inherit it.
    error_fd = int(spec["error_fd"])
    os.set_inheritable(error_fd, False)
    try:
        if spec.get("hostname"):
            socket.sethostname(spec["hostname"])
        mounts: list[tuple[str, str, bool, bool]] = []
        if spec.get("image_root"):
            for source, target, is_file in plan_image(spec["image_root"], spec.get("image_files") or []):
                mounts.append((source, target, False, is_file))
        for m in sorted(spec.get("mounts") or [], key=lambda m: m["target"].count("/")):
            mounts.append((m["source"], m["target"], m.get("read_only", False), m.get("is_file", False)))
        opened = [(os.open(source, os.O_PATH | os.O_CLOEXEC), target, ro, is_file)
                  for source, target, ro, is_file in mounts]
        for fd, target, ro, is_file in opened:
            ensure_mount_point(target, is_file)
            bind(f"/proc/self/fd/{fd}", target, ro)
            os.close(fd)
        if spec.get("read_only_root"):
            _mount(None, "/", MS_REMOUNT | MS_BIND | MS_RDONLY)
        os.chdir(spec.get("working_dir") or "/")
    except OSError as exc:
        _fail(error_fd, f"failed to create containerd task: failed to create shim task: "
                        f"OCI runtime create failed: error mounting: {exc}: unknown")
    argv = spec["argv"]
    env = spec["env"]
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        where = "no such file or directory" if "/" in argv[0] else "executable file not found in $PATH"
        _fail(error_fd, f'failed to create containerd task: failed to create shim task: OCI '
                        f'runtime create failed: runc create failed: unable to start container '
                        f'process: exec: "{argv[0]}": {where}: unknown')
    except OSError as exc:
        _fail(error_fd, f'failed to create containerd task: failed to create shim task: OCI '
                        f'runtime create failed: runc create failed: unable to start container '
                        f'process: exec: "{argv[0]}": {(exc.strerror or str(exc)).lower()}: unknown')


def _fail(fd: int, message: str) -> None:
    os.write(fd, message.encode())
    os._exit(128)


if __name__ == "__main__":
    main(sys.argv[1])
