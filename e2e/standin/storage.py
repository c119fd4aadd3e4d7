"""The file systems TF Serving reads models from, mapped onto local directories.

`gs://`, `s3://` and `hdfs://` URIs resolve under the object-store root named by
`TFSERVING_STANDIN_STORAGE_ROOT`, laid out `<root>/<scheme>/<bucket>/<path>`; `file://`
URIs and absolute paths are read as they are (inside a pod they are volumes or files of
the image). Error texts are TensorFlow's:

- tensorflow/core/platform/env.cc GetFileSystemForFile: an unregistered scheme fails with
  UNIMPLEMENTED "File system scheme 's3' not implemented (file: 's3://b/m')";
- tsl/platform/default/posix_file_system.cc: FileExists answers NOT_FOUND "<path> not
  found"; reads fail with "<path>; No such file or directory" (tsl IOError);
- tsl/platform/cloud/curl_http_request.cc: with no root, gs:// behaves as a GCS that
  cannot be reached (UNAVAILABLE, libcurl's "Couldn't resolve host name"); s3:// and
  hdfs:// as file systems the binary does not have.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass

from e2e.standin.status import Status, StatusError

STORAGE_ROOT_ENV = "TFSERVING_STANDIN_STORAGE_ROOT"
CLOUD_SCHEMES = ("gs", "s3", "hdfs")

_URI = re.compile(r"([a-zA-Z][0-9a-zA-Z.]*)://([^/]*)(.*)")


@dataclass(frozen=True)
class Uri:
    scheme: str
    host: str
    path: str


def parse_uri(uri: str) -> Uri:
    """tensorflow/core/lib/io/path.cc ParseURI: scheme://host/path, or a bare path."""
    m = _URI.fullmatch(uri)
    if m is None:
        return Uri("", "", uri)
    return Uri(m.group(1), m.group(2), m.group(3))


def is_relative(uri: str) -> bool:
    """server_core.cc UriIsRelativePath: no scheme, no host, not an absolute path."""
    u = parse_uri(uri)
    return not u.scheme and not u.host and not u.path.startswith("/")


def join(base: str, child: str) -> str:
    """io::JoinPath for the two-part case TF Serving uses."""
    if not base:
        return child
    return f"{base.rstrip('/')}/{child.lstrip('/')}"


def local_path(uri: str) -> str:
    """Where the stand-in finds `uri` on this machine, or StatusError as TF would fail."""
    u = parse_uri(uri)
    if u.scheme in ("", "file"):
        return u.path if u.scheme == "" else (u.path or "/")
    if u.scheme not in CLOUD_SCHEMES:
        raise StatusError(
            Status("UNIMPLEMENTED", f"File system scheme '{u.scheme}' not implemented (file: '{uri}')")
        )
    root = os.environ.get(STORAGE_ROOT_ENV, "")
    if not root or not os.path.isdir(root):
        if u.scheme == "gs":
            raise StatusError(
                Status(
                    "UNAVAILABLE",
                    "Error executing an HTTP request: libcurl code 6 meaning 'Couldn't "
                    "resolve host name', error details: Could not resolve host: "
                    "storage.googleapis.com",
                )
            )
        raise StatusError(
            Status("UNIMPLEMENTED", f"File system scheme '{u.scheme}' not implemented (file: '{uri}')")
        )
    return os.path.join(root, u.scheme, u.host, u.path.lstrip("/"))


def file_exists(uri: str) -> Status:
    try:
        path = local_path(uri)
    except StatusError as e:
        return e.status
    if os.path.exists(path):
        return Status()
    return Status("NOT_FOUND", f"{uri} not found")


def get_children(uri: str) -> list[str]:
    """Env::GetChildren: the names in a directory (files too), or StatusError."""
    path = local_path(uri)
    try:
        return sorted(os.listdir(path))
    except OSError as e:
        raise StatusError(io_error(uri, e)) from None


def read_file(uri: str) -> bytes:
    path = local_path(uri)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise StatusError(io_error(uri, e)) from None


def io_error(uri: str, e: OSError) -> Status:
    """tsl::IOError: errno mapped to a canonical code, message "<name>; <strerror>"."""
    code = {
        errno.ENOENT: "NOT_FOUND",
        errno.ENOTDIR: "FAILED_PRECONDITION",
        errno.EISDIR: "FAILED_PRECONDITION",
        errno.EACCES: "PERMISSION_DENIED",
        errno.EPERM: "PERMISSION_DENIED",
    }.get(e.errno or 0, "UNKNOWN")
    return Status(code, f"{uri}; {os.strerror(e.errno or 0)}")
