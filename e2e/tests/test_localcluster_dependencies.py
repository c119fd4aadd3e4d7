"""The local control plane refuses to start without the packages it needs, and says which
and how to install them, instead of serving a laxer API (no CRD admission without
cel-python, no schemas without kubernetes-validate)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from e2e.localcluster import _dependencies

ROOT = Path(__file__).resolve().parents[2]

# Installed as sitecustomize in a child interpreter: imports of the named top-level
# modules fail as if the packages were not installed.
BLOCKER = '''
import importlib.abc, sys
BLOCKED = set({blocked!r})
class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Blocker())
'''


def run_cli_without(tmp_path: Path, *modules: str) -> subprocess.CompletedProcess[str]:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(BLOCKER.format(blocked=list(modules)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(shim), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])}
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.run([sys.executable, "-m", "e2e.localcluster", "--kubeconfig", str(kubeconfig)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert not kubeconfig.exists()
    return proc


def test_cli_without_cel_python_names_the_package_and_the_fix(tmp_path: Path) -> None:
    proc = run_cli_without(tmp_path, "celpy")
    assert proc.returncode == 1
    assert "ready" not in proc.stdout
    last = proc.stderr.strip().splitlines()
    assert last[-3:] == [
        "e2e.localcluster._dependencies.MissingDependencyError: The local cluster cannot start: "
        "required packages are missing.",
        "- cel-python (import celpy: No module named 'celpy'), needed for CRD admission: the "
        "CEL rules of x-kubernetes-validations",
        "Install the local cluster's dependencies from the repository root with "
        "`pip install -e '.[localcluster]'` (or `pip install cel-python`).",
    ]


def test_cli_lists_every_missing_package(tmp_path: Path) -> None:
    proc = run_cli_without(tmp_path, "celpy", "kubernetes_validate")
    assert proc.returncode == 1
    assert "- cel-python (import celpy" in proc.stderr
    assert "- kubernetes-validate (import kubernetes_validate" in proc.stderr
    assert "(or `pip install cel-python kubernetes-validate`)" in proc.stderr


def test_the_checked_packages_are_the_declared_extra() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = project["optional-dependencies"]["localcluster"]
    declared = {spec.split(">")[0].split("=")[0].split("[")[0].strip().lower() for spec in extra}
    assert declared == {d.distribution.lower() for d in _dependencies.DEPENDENCIES}
    assert "tfleet[localcluster]" in project["optional-dependencies"]["dev"]


def test_missing_reports_import_errors_only() -> None:
    def fake_import(name: str) -> ModuleType:
        if name == "celpy":
            raise ImportError("broken install")
        return ModuleType(name)

    problems = _dependencies.missing(import_module=fake_import)
    assert [(d.distribution, e) for d, e in problems] == [("cel-python", "broken install")]
    with pytest.raises(ZeroDivisionError):  # anything but an import failure propagates
        _dependencies.missing(import_module=lambda name: 1 // 0)  # type: ignore[arg-type,return-value]
