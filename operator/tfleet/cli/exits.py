"""The exit statuses of the `tfleet` command, one table for every subcommand.

0, 1 and 2 are each command's own answers (for `rollout status`: rolled out, rolled back,
timed out); 3 and up are the ways a command can fail to give an answer at all. Scripts can
therefore tell "the rollout failed" from "tfleet could not ask". The README and `tfleet
--help` print this table.
"""

from __future__ import annotations

EXIT_OK = 0  # rolled out; AVAILABLE; every request answered; done
EXIT_FAILED = 1  # rolled back or stalled; not AVAILABLE; a request failed; refused (no rollout to promote)
EXIT_TIMEOUT = 2  # rollout status: timed out. render: a document is invalid or a file unreadable
EXIT_USAGE = 3  # an unknown flag, a bad flag value, a missing or malformed argument
EXIT_CONFIG = 4  # no usable cluster configuration: no kubeconfig, an unknown context, a broken file
EXIT_UNREACHABLE = 5  # the API server (or the model server) could not be reached
EXIT_API = 6  # the API server refused the request: not found, forbidden, invalid
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

TABLE = (
    (EXIT_OK, "success: rolled out, AVAILABLE, every prediction answered"),
    (EXIT_FAILED, "rolled back or stalled; not AVAILABLE; a prediction failed; nothing to promote or abort"),
    (EXIT_TIMEOUT, "rollout status timed out; render found an invalid document or an unreadable file"),
    (EXIT_USAGE, "usage error: an unknown flag, a bad flag value, a bad argument"),
    (EXIT_CONFIG, "no usable cluster configuration (kubeconfig, context, in-cluster)"),
    (EXIT_UNREACHABLE, "the API server or the model server could not be reached"),
    (EXIT_API, "the API server refused the request (not found, forbidden, ...)"),
)


def epilog() -> str:
    """The table, for the end of `--help`."""
    return "exit status:\n" + "\n".join(f"  {code}  {meaning}" for code, meaning in TABLE)


class CliError(Exception):
    """A failure the command reports in one line and an exit status, never a traceback."""

    def __init__(self, code: int, message: str, hint: str = ""):
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint
