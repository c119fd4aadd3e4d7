"""A fake TF Serving for tests: real gRPC wire protocol, scriptable model states.

In-process: `FakeTFServing` (start/stop, apply events, timelines). As a process:
`python -m e2e.fake_tfserving --port N [--script FILE] [--control-port M]`.
"""

from e2e.fake_tfserving.server import DEFAULT_MODEL, EventError, FakeTFServing, FakeVersion

__all__ = ["DEFAULT_MODEL", "EventError", "FakeTFServing", "FakeVersion"]
