"""Running the project's helm against the chart, for the packaging and e2e tests."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "bin" / "helm"
CHART = ROOT / "charts" / "tfleet"


def helm(*args: str, check: bool = True, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
    return result


def set_args(values: dict[str, Any] | None) -> list[str]:
    """Values as --set-json flags (one per top-level key), so types survive exactly."""
    return [arg for key, value in (values or {}).items() for arg in ("--set-json", f"{key}={json.dumps(value)}")]


# The API a cluster with the Prometheus Operator serves; `helm template` knows only the
# built-in ones unless told.
SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"


def template(values: dict[str, Any] | None = None, release: str = "tfleet",
             namespace: str = "tfleet-system", api_versions: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    extra = [arg for api in api_versions for arg in ("--api-versions", api)]
    out = helm("template", release, str(CHART), "--namespace", namespace, *set_args(values), *extra).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def wants_service_monitor(values: dict[str, Any] | None) -> bool:
    return bool(((values or {}).get("metrics") or {}).get("serviceMonitor", {}).get("enabled"))


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """`template`, as for a cluster that serves the ServiceMonitor API when the values want one."""
    return template(values, api_versions=(SERVICE_MONITOR_API,) if wants_service_monitor(values) else ())


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None,
         namespace: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)
            and (namespace is None or o["metadata"].get("namespace") == namespace)]
