"""Typed errors of the data plane and their HTTP mapping, in one place.

Every error a client can cause is a ``ServeAppError`` subclass carrying a stable
``code`` and an HTTP ``status``; the router turns them into
``{"error": {"code": ..., "message": ...}}``. Messages say how to fix the call and
never echo credentials or image bytes.
"""

from __future__ import annotations

from typing import Any


class ServeAppError(Exception):
    """Base of every error the API reports to a client."""

    status: int = 500
    code: str = "internal"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
        self.headers = headers or {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross Ray handles by pickle; keep Retry-After and headers on the way.
        return (
            self.__class__,
            (self.message,),
            {"retry_after_s": self.retry_after_s, "headers": self.headers},
        )


class BadParameter(ServeAppError):
    status = 400
    code = "bad_parameter"


class Unauthenticated(ServeAppError):
    status = 401
    code = "unauthenticated"


class Forbidden(ServeAppError):
    status = 403
    code = "forbidden"


class NotFound(ServeAppError):
    status = 404
    code = "not_found"


class UnknownModel(NotFound):
    code = "unknown_model"


class MethodNotAllowed(ServeAppError):
    status = 405
    code = "method_not_allowed"


class RequestTimeout(ServeAppError):
    status = 408
    code = "request_timeout"


class Conflict(ServeAppError):
    """The call does not fit the resource's state (delete the active version, say)."""

    status = 409
    code = "conflict"


class PayloadTooLarge(ServeAppError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServeAppError):
    status = 415
    code = "unsupported_media_type"


class UndecodableImage(ServeAppError):
    status = 422
    code = "undecodable_image"


class QuotaExceeded(ServeAppError):
    status = 429
    code = "quota_exceeded"

    def __init__(
        self,
        message: str,
        *,
        reason: str = "rate_limited",
        retry_after_s: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s, headers=headers)
        self.reason = reason  # rate_limited | too_many_concurrent | monthly_quota_exceeded

    def __reduce__(self) -> tuple[Any, ...]:
        cls, args, state = super().__reduce__()
        return cls, args, {**state, "reason": self.reason}


class ModelUnavailable(ServeAppError):
    status = 503
    code = "model_unavailable"


class Overloaded(ServeAppError):
    status = 503
    code = "overloaded"


class ModelLoadError(Exception):
    """A model version could not be fetched, verified or built (operator-facing)."""


def error_body(error: ServeAppError) -> dict[str, dict[str, str]]:
    """The JSON body DESIGN.md fixes for every error response."""
    return {"error": {"code": error.code, "message": error.message}}


def unwrap_error(exc: BaseException) -> ServeAppError | None:
    """The typed API error behind ``exc``, also when Ray wrapped it in a task error.

    Ray re-raises a replica's exception as a ``RayTaskError`` that also subclasses
    the original class but lacks its attributes; the original is its ``cause``.
    """
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            return None
        cause = getattr(current, "cause", None)
        if isinstance(cause, BaseException):
            current = cause
        elif isinstance(current, ServeAppError):
            return current
        else:
            current = current.__cause__
    return None


def error_class(code: str, status: int) -> type[ServeAppError]:
    """The error class an answer's ``code`` names (else the first with its status):
    how an HTTP client raises the same typed errors as a handle."""
    classes, stack = [], [ServeAppError]
    while stack:
        cls = stack.pop(0)
        classes.append(cls)
        stack.extend(cls.__subclasses__())
    for cls in classes:
        if cls.code == code and cls.status == status:
            return cls
    for cls in classes:
        if cls.status == status:
            return cls
    return ServeAppError
