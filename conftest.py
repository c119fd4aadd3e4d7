"""Shared pytest wiring: the local control plane fixtures are available to every test tree."""

pytest_plugins = ["e2e.localcluster.fixtures"]
