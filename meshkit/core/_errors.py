"""The one error a caller of the bus sees with a status: raised by handlers, the bus and the transports."""

from __future__ import annotations


class AppError(Exception):
    """Raise in a handler to answer with this status and message (anything else becomes a 500)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __repr__(self) -> str:
        return f"AppError({self.status}, {self.message!r})"
