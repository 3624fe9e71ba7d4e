"""Request errors: a status, a message, and which field was wrong, what was expected, what came.

Every problem with a request becomes a :class:`RequestError`; the app turns it into a JSON body
in the protocol's own error shape (``{"error": ...}`` for the Open Inference Protocol,
``{"error_code": ..., "message": ...}`` for MLflow's ``/invocations``), with ``field``,
``expected`` and ``got`` alongside. No input reaches a stack trace.
"""

from __future__ import annotations

from typing import Any

from amber.artifact._manifest import is_utf8

__all__ = ["RequestError", "describe_value"]

_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "INVALID_PARAMETER_VALUE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _utf8_safe(text: str) -> str:
    """``text`` with any lone surrogate as a ``\\udxxx`` escape (it cannot be UTF-8)."""
    return text if is_utf8(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")


class RequestError(Exception):
    """A request the server refuses, with what was wrong and where."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        expected: str | None = None,
        got: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        # what a request sent may hold lone surrogates (JSON's "\ud800"), which no UTF-8 body
        # can carry: they are written as escapes, so that the refusal is a 400 and not a 500
        message = _utf8_safe(message)
        field, expected, got = (
            None if t is None else _utf8_safe(t) for t in (field, expected, got)
        )
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.expected = expected
        self.got = got
        self.headers = headers or {}

    def restate(self, field: str) -> None:
        """Name another ``field`` (the row a column check found, say) in the message too, and in
        ``str()``, which logs and tracebacks show."""
        self.field = _utf8_safe(field)
        self.message = f"{self.field}: expected {self.expected}, got {self.got}"
        self.args = (self.message,)

    @property
    def reason(self) -> str:
        """A short label for metrics: the HTTP status's code name."""
        return _CODES.get(self.status, str(self.status))

    def body(self, protocol: str = "v2") -> dict[str, Any]:
        """The JSON error body in the shape ``protocol`` (``"v2"`` or ``"mlflow"``) uses."""
        out: dict[str, Any]
        if protocol == "mlflow":
            out = {"error_code": self.reason, "message": self.message}
        else:
            out = {"error": self.message}
        for key in ("field", "expected", "got"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


def describe_value(value: Any, limit: int = 40) -> str:
    """A short, safe description of a JSON value for an error message: its type and a preview."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int) and value.bit_length() > 128:
        return f"a {value.bit_length()}-bit integer"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        text = value if len(value) <= limit else value[:limit] + "..."
        return f"string {text!r}"
    if isinstance(value, list):
        return f"array of {len(value)}"
    if isinstance(value, dict):
        keys = ", ".join(list(map(str, value))[:5])
        return f"object {{{keys}}}"
    return type(value).__name__
