"""absl::Status as TF Serving passes it around: a canonical code and a message."""

from __future__ import annotations

from dataclasses import dataclass

from tfleet.health.protos import ERROR_CODE_NAMES, ERROR_CODES


@dataclass(frozen=True)
class Status:
    code: str = "OK"
    message: str = ""

    def __post_init__(self) -> None:
        if self.code not in ERROR_CODES:
            raise ValueError(f"unknown status code {self.code!r}")

    @property
    def ok(self) -> bool:
        return self.code == "OK"

    @property
    def number(self) -> int:
        return ERROR_CODES[self.code]

    def __str__(self) -> str:
        # absl::Status::ToString(): "OK", or "<CODE>: <message>".
        return "OK" if self.ok else f"{self.code}: {self.message}"

    @classmethod
    def from_number(cls, number: int, message: str) -> Status:
        return cls(ERROR_CODE_NAMES.get(number, "UNKNOWN"), message if number else "")


OK = Status()


def invalid_argument(message: str) -> Status:
    return Status("INVALID_ARGUMENT", message)


def not_found(message: str) -> Status:
    return Status("NOT_FOUND", message)


def failed_precondition(message: str) -> Status:
    return Status("FAILED_PRECONDITION", message)


def unknown(message: str) -> Status:
    return Status("UNKNOWN", message)


def internal(message: str) -> Status:
    return Status("INTERNAL", message)


class StatusError(Exception):
    """Carries a non-OK Status out of deep call chains (TF_RETURN_IF_ERROR)."""

    def __init__(self, status: Status) -> None:
        super().__init__(str(status))
        self.status = status
