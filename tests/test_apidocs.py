"""The API reference is generated from the CRD schema and must not drift from it."""

from __future__ import annotations

from pathlib import Path

from tfleet.api.crd import build_crd
from tfleet.api.reference import api_reference

ROOT = Path(__file__).resolve().parents[1]


def test_the_checked_in_api_reference_matches_the_schema():
    checked_in = (ROOT / "docs" / "api-reference.md").read_text()
    assert checked_in == api_reference(), "docs/api-reference.md drifted: run `make manifests`"


def _fields(schema, path):
    for name, prop in (schema.get("properties") or {}).items():
        yield f"{path}.{name}", prop
        child = prop.get("items", prop) if prop.get("type") == "array" else prop
        yield from _fields(child, f"{path}.{name}")


def test_every_spec_and_status_field_is_in_the_reference():
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    reference = api_reference()
    for root in ("spec", "status"):
        for path, _ in _fields(schema["properties"][root], root):
            leaf = path.rsplit(".", 1)[1]
            assert f"| `{leaf}` |" in reference, path
