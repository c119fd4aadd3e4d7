"""The Argo CD health check (docs/argocd-health.lua), evaluated by Lua 5.4 and by its Python port."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.packaging.argocd_health import health

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "argocd-health.lua"
LUA = shutil.which("lua5.4") or shutil.which("lua5.3") or shutil.which("lua")


def tfis(generation: int = 2, observed: int | None = 2, phase: str | None = "Idle", rollout_message: str = "",
         **conditions: tuple[str, str, str] | str) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService",
                           "metadata": {"name": "m", "namespace": "ml", "generation": generation}}
    if observed is None and not conditions:
        return obj
    status: dict[str, Any] = {"conditions": []}
    if observed is not None:
        status["observedGeneration"] = observed
    for type_, value in conditions.items():
        state, reason, message = value if isinstance(value, tuple) else (value, "", "")
        status["conditions"].append({"type": type_, "status": state, "reason": reason, "message": message})
    if phase is not None:
        status["rollout"] = {"phase": phase, "message": rollout_message}
    obj["status"] = status
    return obj


CASES = {
    "new object, no status yet": (
        tfis(observed=None), ("Progressing", "Waiting for the operator to observe generation 2")),
    "spec changed, not observed yet": (
        tfis(generation=3, observed=2, Ready=("True", "Ready", "2/2 ready")),
        ("Progressing", "Waiting for the operator to observe generation 3")),
    "ready and idle": (
        tfis(Ready=("True", "Ready", "2/2 replicas serving version 1"), Degraded="False"),
        ("Healthy", "2/2 replicas serving version 1")),
    "rollout succeeded": (
        tfis(phase="Succeeded", Ready=("True", "Ready", "")), ("Healthy", "Ready")),
    "canary step running": (
        tfis(phase="Progressing", rollout_message="Step 1/2: 10% on revision abc",
             Ready=("True", "Ready", "")),
        ("Progressing", "Step 1/2: 10% on revision abc")),
    "promoting": (
        tfis(phase="Promoting", Ready=("True", "Ready", "")), ("Progressing", "A rollout is in progress")),
    "paused": (
        tfis(phase="Paused", rollout_message="Paused at step 1", Ready=("True", "Ready", "")),
        ("Suspended", "Paused at step 1")),
    "rolled back": (
        tfis(phase="RolledBack", rollout_message="Version 3 never became AVAILABLE",
             Ready=("True", "Ready", ""), Degraded=("True", "RolledBack", "rolled back")),
        ("Degraded", "Version 3 never became AVAILABLE")),
    "invalid spec": (
        tfis(Ready=("False", "InvalidSpec", "spec.model.basePath: unsupported storage"),
             Degraded="False"),
        ("Degraded", "spec.model.basePath: unsupported storage")),
    "degraded": (
        tfis(phase=None, Ready=("False", "ModelUnavailable", ""),
             Degraded=("True", "ModelLoadFailed", "version 2 failed to load")),
        ("Degraded", "version 2 failed to load")),
    "pods starting": (
        tfis(Ready=("False", "ReplicasNotReady", "0/2 ready"), Degraded="False"),
        ("Progressing", "0/2 ready")),
    "ready, but a rolling update still runs": (
        tfis(Ready=("True", "Available", "2 of 2 pods are ready"), Degraded="False",
             Reconciling=("True", "ReplicasNotReady", "Revision abc is rolling out")),
        ("Progressing", "Revision abc is rolling out")),
    "no conditions yet": (
        tfis(phase=None), ("Progressing", "Waiting for the model servers to become ready")),
}


def lua_literal(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def evaluate_lua(obj: dict[str, Any]) -> tuple[str, str]:
    """Runs the script as Argo CD does: a chunk with `obj` in scope that returns `hs`."""
    assert LUA is not None
    program = (f"local obj = {lua_literal(obj)}\n"
               f"local hs = (function()\n{SCRIPT.read_text()}\nend)()\n"
               'io.write(hs.status, "\\t", hs.message)\n')
    result = subprocess.run([LUA, "-"], input=program, capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    status, _, message = result.stdout.partition("\t")
    return status, message


@pytest.mark.parametrize("case", list(CASES))
def test_the_python_port(case):
    obj, expected = CASES[case]
    assert health(obj) == expected


@pytest.mark.skipif(LUA is None, reason="no Lua runtime (make test installs lua5.4); the Python port is tested")
@pytest.mark.parametrize("case", list(CASES))
def test_the_lua_script(case):
    obj, expected = CASES[case]
    assert evaluate_lua(obj) == expected


def test_the_lua_literal_round_trips_strings_with_quotes():
    if LUA is None:
        pytest.skip("no Lua runtime")
    obj = tfis(Ready=("False", "InvalidSpec", 'say "hi"\\n'))
    assert evaluate_lua(obj) == ("Degraded", 'say "hi"\\n')
