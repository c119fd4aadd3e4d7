"""The third-party packages the local control plane cannot work without, checked up front.

Without one of them the control plane would not be the one the tests think they run:
without cel-python every CRD write would skip admission (schema, defaulting, pruning, CEL
rules); without kubernetes-validate built-in objects would keep unknown fields and
``/openapi/v3`` would be empty. So the package refuses to load, naming what is missing and
how to install it, instead of serving a laxer API. The same list is the ``localcluster``
extra in ``pyproject.toml``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

INSTALL_HINT = "pip install -e '.[localcluster]'"


@dataclass(frozen=True)
class Dependency:
    distribution: str  # the name on PyPI
    module: str  # what the control plane imports
    needed_for: str


DEPENDENCIES = (
    Dependency("aiohttp", "aiohttp", "the HTTP server that serves the API"),
    Dependency("PyYAML", "yaml", "YAML request bodies, kubeconfigs and node topologies"),
    Dependency("cel-python", "celpy",
               "CRD admission: the CEL rules of x-kubernetes-validations"),
    Dependency("kubernetes-validate", "kubernetes_validate",
               "the built-in object schemas: unknown-field pruning, OpenAPI v3, server-side apply"),
)


class MissingDependencyError(ImportError):
    """A package the local control plane needs is not installed."""


def missing(
    dependencies: tuple[Dependency, ...] = DEPENDENCIES,
    import_module: Callable[[str], ModuleType] = importlib.import_module,
) -> list[tuple[Dependency, str]]:
    """The dependencies that do not import, each with the import error's text."""
    out = []
    for dep in dependencies:
        try:
            import_module(dep.module)
        except ImportError as exc:
            out.append((dep, str(exc)))
    return out


def message(problems: list[tuple[Dependency, str]]) -> str:
    lines = ["The local cluster cannot start: required packages are missing."]
    for dep, error in problems:
        lines.append(f"- {dep.distribution} (import {dep.module}: {error}), needed for {dep.needed_for}")
    names = " ".join(dep.distribution for dep, _ in problems)
    lines.append(f"Install the local cluster's dependencies from the repository root with "
                 f"`{INSTALL_HINT}` (or `pip install {names}`).")
    return "\n".join(lines)


def require() -> None:
    """Raise MissingDependencyError naming every missing package and how to install it."""
    problems = missing()
    if problems:
        raise MissingDependencyError(message(problems))
