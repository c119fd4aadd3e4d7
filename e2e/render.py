"""`tfleet render`, as the demo runs it: what the operator will create for a manifest file,
and the revision of each InferenceService in it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def render(path: Path) -> list[dict[str, Any]]:
    """The objects `tfleet render -f <path>` prints."""
    out = subprocess.run([sys.executable, "-m", "tfleet.cli", "render", "-f", str(path)],
                         text=True, capture_output=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def revisions_of(objects: list[dict[str, Any]]) -> dict[str, str]:
    """InferenceService name -> revision, from the Deployments among `objects`."""
    return {d["metadata"]["labels"]["tfleet.dev/inferenceservice"]: d["metadata"]["labels"]["tfleet.dev/revision"]
            for d in objects if d["kind"] == "Deployment"}
