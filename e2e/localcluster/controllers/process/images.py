"""The images the process runtime knows, and the files, ENTRYPOINT, CMD and ENV each
provides. There is no registry and no pull: an image is a recipe that runs a program of
this repository (or of a test) with the interpreter the cluster runs on.

- ``tensorflow/serving*`` (any tag, ``-gpu`` too): the TF Serving stand-in,
  ``e2e/standin/image.py`` (``ENTRYPOINT``, ``ENV``, ``image_files(python, pythonpath)``);
  its ENV also gets ``TFSERVING_STANDIN_STORAGE_ROOT=<storage_root>/objects``.
- ``ghcr.io/tfleet/tfleet*`` and the repository named by ``TFLEET_BRIDGE_IMAGE``: tfleet's
  own image (see the repository's ``Dockerfile``): ``/opt/tfleet/bin/tfleet`` runs
  ``python -m tfleet.cli`` with this checkout's ``operator/`` on PYTHONPATH, on PATH.
- images a cluster option adds (``images``), for tests.

Anything else is unknown: the container waits with ErrImagePull / ImagePullBackOff and a
message saying so.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[4]
STORAGE_ROOT_ENV = "TFSERVING_STANDIN_STORAGE_ROOT"
TFLEET_ENTRYPOINT = "/opt/tfleet/bin/tfleet"
TFLEET_PATH = "/opt/tfleet/bin:/usr/local/bin:/usr/bin:/bin"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageNotKnown(Exception):
    """The runtime has no recipe for this image: reported as ErrImagePull."""


@dataclass(frozen=True)
class Image:
    reference: str
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    # absolute path in the container -> (content, mode)
    files: Mapping[str, tuple[str | bytes, int]] = field(default_factory=dict)
    working_dir: str = ""
    # Host directories the container reaches as it would reach a remote service, mounted
    # at their own host path after the volumes (so a volume at /tmp hides none of them):
    # (host path, read only).
    reaches: tuple[tuple[str, bool], ...] = ()

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.entrypoint, self.cmd, sorted(self.env.items())):
            h.update(repr(part).encode())
        for path in sorted(self.files):
            content, mode = self.files[path]
            h.update(path.encode() + b"\0" + oct(mode).encode() + b"\0")
            h.update(content if isinstance(content, bytes) else content.encode())
        return h.hexdigest()


def repository(reference: str) -> str:
    """The image's repository in its canonical form, without tag or digest
    (``tensorflow/serving:2.19.0`` -> ``docker.io/tensorflow/serving``)."""
    name = reference.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    if name.startswith("index.docker.io/"):
        name = "docker.io/" + name[len("index.docker.io/") :]
    return name


@dataclass(frozen=True)
class ImageContext:
    """What the recipes need: the interpreter and where the cluster keeps its storage."""

    python: str
    storage_root: Path


Recipe = Callable[[str, ImageContext], Image]


def program_paths(ctx: ImageContext) -> tuple[tuple[str, bool], ...]:
    """What the images' programs are made of on this host: the interpreter's installation and
    this checkout (the stand-in and tfleet run from it). In a real runtime they would be the
    image's own files (/usr/bin, /opt/...), where a pod's volumes do not go. Here they are
    reached read-only at their own paths, after the volumes: a checkout under /tmp must not
    vanish behind a pod's /tmp emptyDir."""
    interpreter = Path(ctx.python)
    paths = {str(REPO_ROOT), sys.prefix, sys.base_prefix, str(interpreter.resolve().parent.parent)}
    if not interpreter.is_relative_to(REPO_ROOT):
        paths.add(str(interpreter.parent.parent))
    # A path inside another one is reached with it.
    kept = sorted(p for p in paths if not any(p != q and Path(p).is_relative_to(q) for q in paths))
    return tuple((p, True) for p in kept)


def tfleet_image(reference: str, ctx: ImageContext) -> Image:
    operator = REPO_ROOT / "operator"
    wrapper = (
        "#!/bin/sh\n"
        "# tfleet's image entrypoint, run from this checkout's operator package.\n"
        f'PYTHONPATH="{operator}${{PYTHONPATH:+:$PYTHONPATH}}"\n'
        "export PYTHONPATH\n"
        f'exec "{ctx.python}" -m tfleet.cli "$@"\n'
    )
    return Image(
        reference,
        entrypoint=(TFLEET_ENTRYPOINT,),
        cmd=("run", "--all-namespaces"),
        reaches=program_paths(ctx),
        env={"PATH": TFLEET_PATH, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"},
        files={TFLEET_ENTRYPOINT: (wrapper, 0o755)},
    )


def tf_serving_image(reference: str, ctx: ImageContext) -> Image:
    try:
        from e2e.standin import image as standin
    except ImportError as exc:
        raise ImageNotKnown(
            f"the TF Serving stand-in (e2e/standin/image.py) cannot be loaded: {exc}"
        ) from None
    pythonpath = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "operator")])
    env = dict(getattr(standin, "ENV", {}) or {})
    env.setdefault("PATH", DEFAULT_PATH)
    objects = ctx.storage_root / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    env[STORAGE_ROOT_ENV] = str(objects)
    return Image(
        reference,
        entrypoint=tuple(standin.ENTRYPOINT),
        cmd=tuple(getattr(standin, "CMD", ()) or ()),
        env=env,
        files=dict(standin.image_files(ctx.python, pythonpath)),
        working_dir=str(getattr(standin, "WORKDIR", "") or ""),
        # The object store stands for gs://, s3:// and hdfs://: reachable from any pod.
        reaches=((str(objects), True), *program_paths(ctx)),
    )


def image_from_option(reference: str, spec: Mapping[str, Any], ctx: ImageContext | None = None) -> Image:
    """An image a test defines through the ``images`` cluster option (its programs run from
    this host's interpreter, which it reaches as the built-in images do)."""
    files = {}
    for path, value in (spec.get("files") or {}).items():
        if isinstance(value, str | bytes):
            files[str(path)] = (value, 0o644)
        else:
            content, mode = value
            files[str(path)] = (content, int(mode))
    env = {"PATH": DEFAULT_PATH, **{str(k): str(v) for k, v in (spec.get("env") or {}).items()}}
    return Image(
        reference,
        entrypoint=tuple(spec.get("entrypoint") or ()),
        cmd=tuple(spec.get("cmd") or ()),
        env=env,
        files=files,
        working_dir=str(spec.get("workingDir") or ""),
        reaches=program_paths(ctx) if ctx is not None else (),
    )


def validate_images_option(value: Any) -> dict[str, dict[str, Any]]:
    """The ``images`` option: {repository or reference: {entrypoint, cmd, env, files,
    workingDir}}. Raises ValueError naming what is wrong."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError("option images must be a mapping of image name to image spec")
    out = {}
    for name, spec in value.items():
        if not isinstance(spec, Mapping):
            raise ValueError(f"option images[{name}] must be a mapping")
        unknown = set(spec) - {"entrypoint", "cmd", "env", "files", "workingDir"}
        if unknown:
            raise ValueError(f"option images[{name}]: unknown field(s) {sorted(unknown)}")
        for key in ("entrypoint", "cmd"):
            if not isinstance(spec.get(key) or [], list | tuple):
                raise ValueError(f"option images[{name}].{key} must be a list")
        out[str(name)] = dict(spec)
    return out


class ImageRegistry:
    """Resolves a pod's image reference to an Image, or raises ImageNotKnown."""

    def __init__(self, ctx: ImageContext, extra: Mapping[str, Mapping[str, Any]] | None = None):
        self.ctx = ctx
        self.extra = dict(extra or {})
        self._cache: dict[str, Image] = {}

    def recipe(self, reference: str) -> Recipe | None:
        repo = repository(reference)
        for name, spec in self.extra.items():
            if name == reference or repository(name) == repo:
                return lambda ref, ctx, spec=spec: image_from_option(ref, spec, ctx)
        if fnmatch.fnmatchcase(repo, "docker.io/tensorflow/serving*"):
            return tf_serving_image
        bridge = os.environ.get("TFLEET_BRIDGE_IMAGE")
        if fnmatch.fnmatchcase(repo, "ghcr.io/tfleet/tfleet*") or (
            bridge and repository(bridge) == repo
        ):
            return tfleet_image
        return None

    def resolve(self, reference: str) -> Image:
        cached = self._cache.get(reference)
        if cached is not None:
            return cached
        recipe = self.recipe(reference)
        if recipe is None:
            raise ImageNotKnown(
                f'failed to pull and unpack image "{reference}": the local process runtime '
                f"does not know image {repository(reference)} (it knows tensorflow/serving*, "
                "ghcr.io/tfleet/tfleet*, TFLEET_BRIDGE_IMAGE and the images given in the "
                "cluster's 'images' option)"
            )
        image = recipe(reference, self.ctx)
        self._cache[reference] = image
        return image


def default_context(storage_root: Path) -> ImageContext:
    return ImageContext(python=sys.executable, storage_root=storage_root)
