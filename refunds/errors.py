"""The one error hierarchy of the pipeline.

Everything the pipeline raises on purpose derives from :class:`RefundsError`, so a caller (a
merchant app, the CLI, the web app) can catch one class; the exception is :class:`ConfigError`
(``config.errors.ConfigError``, re-exported here), raised before any refund is touched. The
provider branch (:class:`MceError`
and below) follows the shape of openai-python and stripe-python: one class per meaningful HTTP
status under a common base, a separate branch for connection errors and timeouts, and every error
carries the HTTP status, the provider's stable ``code`` and its ``logId``. The tree is split by
what the pipeline does about an error, not by where it came from: transient errors are retried
with backoff, permanent ones stop the refund in a state that names the reason, authentication
errors refresh the token once.

Every exception here survives ``pickle`` (Celery serializes exceptions into results and events), and
none of them ever holds a bearer token, a client secret or a webhook secret.
"""

from __future__ import annotations

from typing import Any

from config.errors import ConfigError as ConfigError  # noqa: PLC0414 - explicit re-export (mypy)


class RefundsError(Exception):
    """Root of every error the pipeline raises on purpose."""


# --- configuration and intake -------------------------------------------------------------------


# ConfigError: configuration's own error (``config/`` imports nothing from the domain), imported
# above so that ``refunds.errors.ConfigError is config.errors.ConfigError``.


class FieldError(RefundsError):
    """One field of one input is invalid. ``line`` is set for batch files (1-based)."""

    def __init__(self, field: str, message: str, line: int | None = None) -> None:
        self.field = field
        self.message = message
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.field}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.field, self.message, self.line))


class InvalidIntentError(RefundsError):
    """An intent (or a batch of intents) failed validation; nothing was written."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors,))


class BatchError(InvalidIntentError):
    """A batch file was refused; nothing was written.

    ``errors`` lists the first problems in file order (a file can have millions of bad lines, so
    the reader keeps a bounded number) and ``total`` counts all of them.
    """

    def __init__(self, errors: list[FieldError], total: int | None = None) -> None:
        super().__init__(errors)
        self.total = len(self.errors) if total is None else total

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors, self.total))


class ConflictError(RefundsError):
    """The same ``clientReference`` was submitted before with different content."""

    def __init__(self, client_reference: str, differences: list[str]) -> None:
        self.client_reference = client_reference
        self.differences = list(differences)
        super().__init__(
            f"clientReference {client_reference!r} already exists with different "
            f"{', '.join(self.differences)}"
        )

    @property
    def field_message(self) -> str:
        """What each field named in ``differences`` is told (the HTTP problem's ``errors``)."""
        return "differs from the existing intent"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.client_reference, self.differences))


class PaymentConflictError(ConflictError):
    """The original payment is already being refunded under another ``clientReference``.

    One payment, one reference: a second reference for the same (type, id) would be a second
    Create at MCE for the same money. The id is compared byte-exact, as MCE compares it.
    """

    def __init__(
        self, client_reference: str, existing_reference: str, transaction_type: int,
        transaction_id: str,
    ) -> None:
        self.existing_reference = existing_reference
        self.transaction_type = transaction_type
        self.transaction_id = transaction_id
        RefundsError.__init__(
            self,
            f"payment {transaction_type}/{transaction_id!r} is already refunded under "
            f"clientReference {existing_reference!r}; {client_reference!r} was not created",
        )
        self.client_reference = client_reference
        self.differences = ["originalTransactionId"]

    @property
    def field_message(self) -> str:
        return f"already refunded under clientReference {self.existing_reference!r}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.client_reference, self.existing_reference, self.transaction_type,
             self.transaction_id),
        )


class RefundNotFoundError(RefundsError):
    """No refund record exists for the reference."""

    def __init__(self, client_reference: str) -> None:
        self.client_reference = client_reference
        super().__init__(f"no refund with clientReference {client_reference!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.client_reference,))


class ArchiveUnavailableError(RefundsError):
    """The reference left Redis for the SQL archive, and the archive could not answer for it
    (not configured in this process, unreachable, or the record missing there)."""

    def __init__(self, client_reference: str, why: str) -> None:
        self.client_reference = client_reference
        self.why = why
        super().__init__(f"refund {client_reference} is archived and the archive {why}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.client_reference, self.why))


class TransitionError(RefundsError):
    """A state change was refused: the edge is not in the table, or the record moved meanwhile."""

    def __init__(self, client_reference: str, current: str | None, target: str, why: str) -> None:
        self.client_reference = client_reference
        self.current = current
        self.target = target
        self.why = why
        super().__init__(f"{client_reference}: {current} -> {target} refused: {why}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.client_reference, self.current, self.target, self.why))


class CallbackRefusedError(RefundsError):
    """The merchant's outcome callback endpoint answered with a non-2xx status."""


class OperatorActionError(RefundsError):
    """An operator action does not apply to the refund as it stands (the message says why)."""

    def __init__(self, client_reference: str, action: str, why: str) -> None:
        self.client_reference = client_reference
        self.action = action
        self.why = why
        super().__init__(f"cannot {action} {client_reference}: {why}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.client_reference, self.action, self.why))


class NotDurableError(RefundsError):
    """A write was applied on the Redis primary but fewer replicas than required confirmed it.

    The write may still be there, or may be lost if the primary fails over now: the caller must
    retry (the same intent or action again is safe; intake is idempotent by clientReference).
    The web answers 503 with ``Retry-After``; the CLI exits with EXIT_NOT_DURABLE (75).
    """

    def __init__(self, acked: int, required: int, timeout_ms: int) -> None:
        self.acked = acked
        self.required = required
        self.timeout_ms = timeout_ms
        super().__init__(
            f"not durably stored: {acked} of {required} replicas confirmed within "
            f"{timeout_ms} ms; retry"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.acked, self.required, self.timeout_ms))


class WebhookRejectedError(RefundsError):
    """An inbound webhook failed verification; ``status`` is the HTTP answer (400 or 401)."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, self.reason))


# --- the provider ---------------------------------------------------------------------------------


class MceError(RefundsError):
    """An MCE call failed. Carries what support and program logic need, never credentials.

    ``code``, ``msg`` and ``log_id`` are the provider's own (its stable code, the message it gave,
    and the trace id its support asks for), whichever way the answer carried them: an RFC 7807
    problem or an error envelope in an HTTP 200.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        log_id: str | None = None,
        retry_after: float | None = None,
        operation: str | None = None,
        msg: str | None = None,
    ) -> None:
        self.message = message
        self.msg = msg
        self.status = status
        self.code = code
        self.log_id = log_id
        self.retry_after = retry_after
        self.operation = operation
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [self.message]
        if self.operation:
            parts.append(f"operation={self.operation}")
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.code:
            parts.append(f"code={self.code}")
        if self.log_id:
            parts.append(f"logId={self.log_id}")
        return " ".join(parts)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments do not survive the default reduce; rebuild through a helper.
        return (
            _rebuild_mce_error,
            (
                type(self),
                self.message,
                {
                    "status": self.status,
                    "code": self.code,
                    "log_id": self.log_id,
                    "retry_after": self.retry_after,
                    "operation": self.operation,
                    "msg": self.msg,
                },
            ),
        )

    def as_dict(self) -> dict[str, Any]:
        """What the ledger keeps as ``last_error``: enough to act on, and safe to show."""
        return {
            "type": type(self).__name__,
            "message": self.message,
            "status": self.status,
            "code": self.code,
            "logId": self.log_id,
            "msg": self.msg,
            "operation": self.operation,
        }


def _rebuild_mce_error(cls: type[MceError], message: str, kwargs: dict[str, Any]) -> MceError:
    return cls(message, **kwargs)


class MceTransientError(MceError):
    """Worth retrying with backoff: the same call may succeed later."""


class MceConnectionError(MceTransientError):
    """No answer: refused, reset, or dropped before a response (the call may have taken effect)."""


class MceTimeoutError(MceConnectionError):
    """No complete answer within the call's deadline (the call may have taken effect).

    The deadline covers the whole exchange (connect, then the head and the whole body), so a
    provider that trickles its answer a byte at a time ends here too, within one call's budget.
    """


class MceRateLimitedError(MceTransientError):
    """HTTP 429. ``retry_after`` holds the provider's ``Retry-After`` seconds when it sent one."""


class MceThrottledError(MceTransientError):
    """Not sent: the cluster-wide pace (or a 429's push-back) says wait ``retry_after`` seconds.

    Not a failed attempt either: the provider never saw the call.
    """


class MceServerError(MceTransientError):
    """HTTP 5xx, including a gateway's non-JSON page."""


class MceAuthError(MceError):
    """HTTP 401: the token (or the client credentials) were refused."""


class McePermanentError(MceError):
    """Retrying the same call will not help; the refund needs another decision."""


class MceBadRequestError(McePermanentError):
    """HTTP 400."""


class MceForbiddenError(McePermanentError):
    """HTTP 403."""


class MceNotFoundError(McePermanentError):
    """HTTP 404 (and 422 answers whose code says "not found")."""


class MceConflictError(MceTransientError):
    """HTTP 409 without a business code: the request conflicts with one still in flight (the
    pipeline itself makes these: a soft time limit, a lapsed lease, a backoff floor of 0.05 s).
    Transient: retried with backoff. A 409 carrying a business code is that business error
    (``refunds.mce.errors``), permanent like its 422."""


class MceUnprocessableError(McePermanentError):
    """HTTP 422: business validation failed; the ``code`` says which rule."""


class MceProtocolError(MceTransientError):
    """An answer that does not follow the contract (not JSON, no ``data``, wrong types, or larger
    than the answer cap, which is refused unread past the cap).

    Treated as transient: such answers come from gateways and half-deployed releases far more
    often than from a stable API; the attempt budget still ends in ``needs_attention``.
    """


class LedgerResetError(RefundsError):
    """Redis lost the ledger (its epoch is gone or replaced: ``refunds.store.epoch``) and no
    operator has acknowledged it yet: intake is refused. The web answers 503 with
    ``Retry-After``; the CLI exits 75. Nothing was written."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self),))


class NoResetToAcknowledgeError(RefundsError):
    """``refunds redis ack-reset`` found no recorded reset: the epoch is left as it is."""

    def __init__(self, current: str) -> None:
        self.current = current
        super().__init__(f"no ledger reset is recorded (current epoch: {current}); nothing changed")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.current,))
