"""A fake TF Serving for tests: real gRPC wire protocol, scriptable model states.

In-process: `FakeTFServing` (start/stop, apply events, timelines). As a process:
`python -m tests.fakes.tfserving --port N [--script FILE] [--control-port M]`.
"""

from tests.fakes.tfserving.server import DEFAULT_MODEL, EventError, FakeTFServing, FakeVersion

__all__ = ["DEFAULT_MODEL", "EventError", "FakeTFServing", "FakeVersion"]
