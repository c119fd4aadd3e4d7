"""The repository root is on sys.path for every test tree (`e2e` and `tests` import as packages).

The local control plane's fixtures are loaded only where they are used: `e2e/tests/conftest.py`.
Unit tests under `tests/` run without them.
"""
