"""The provider's endpoints (token, create, confirm, get) with faults applied around them.

Per call, in the contract's order: the sandbox's own rate limit, added latency, an injected error
(decided before the effect, so a 429/500/502/503 means nothing happened), then the real work, then
a lost or slow response (decided after the effect, so the work did happen and an idempotent retry
replays it). Faults and latency apply only to operations listed in ``fault_operations``, and so
do the answer's travel (trickled, padded, endless: ``sandbox.shaping``) and an HTTP 200 whose
envelope carries an error (decided before the effect, like the injected errors).
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from sandbox import problems
from sandbox.config import SandboxConfig
from sandbox.faults import FaultInjector
from sandbox.problems import ProviderError, bad_gateway_response, invalid, problem_response
from sandbox.responses import Request, Response, dumps, envelope, seconds_value
from sandbox.shaping import Shaping
from sandbox.state import SandboxState
from sandbox.validation import (
    parse_json_object,
    require_str,
    require_transaction_type,
)

#: Path tails under each version prefix in ``API_VERSIONS`` (``/v1.0/...`` and ``/v2.0/...``).
TOKEN_TAIL = "/oauth/token"  # noqa: S105 - a path, not a secret
CREATE_TAIL = "/payment/crypto/createCryptoRefund"
CONFIRM_TAIL = "/payment/crypto/confirmCryptoRefund"
GET_TAIL = "/payment/crypto/getCryptoRefund"
TAILS = {"token": TOKEN_TAIL, "create": CREATE_TAIL, "confirm": CONFIRM_TAIL, "get": GET_TAIL}
FORM = "application/x-www-form-urlencoded"

IDEMPOTENCY_HEADER = "idempotency-key"
_MAX_IDEMPOTENCY_KEY = 255

_INJECTED = {
    "409": (problems.REQUEST_IN_PROGRESS, "a request with this idempotency key is in progress"),
    "429": (problems.RATE_LIMITED, "rate limit exceeded, retry later"),
    "500": (problems.INTERNAL_ERROR, "internal error"),
    "503": (problems.SERVICE_UNAVAILABLE, "service temporarily unavailable, retry later"),
}


class ProviderApi:
    """Answers provider calls from :class:`SandboxState`, faults from :class:`FaultInjector`."""

    def __init__(
        self, state: SandboxState, faults: FaultInjector, *, client_id: str, client_secret: str
    ) -> None:
        self.state = state
        self.faults = faults
        self._client_id = client_id.encode()
        self._client_secret = client_secret.encode()
        self.operations: dict[str, Callable[[Request], Response]] = {
            "token": self._token,
            "create": self._create,
            "confirm": self._confirm,
            "get": self._get,
        }

    def handle(self, operation: str, request: Request) -> Response:
        """Answer one provider call, applying faults and updating the counters."""
        state = self.state
        cfg = state.config
        counted = state.count_call(operation)
        state.record_request(operation, _recorded(operation, request))
        faulty = operation in cfg.fault_operations
        if faulty:
            injected = self._before_effect(request, cfg)
            if injected is not None:
                state.count_response(operation, injected.status, counted)
                return injected
        response = self._run(operation, request)
        if faulty:
            after = self.faults.pick_after_effect(cfg)
            if after == "lost":
                state.count_fault("lost", counted)
                return Response(status=response.status, body=b"", drop=True)
            if after == "slow":
                state.count_fault("slow", counted)
                time.sleep(cfg.slow_ms / 1000)
        state.count_response(operation, response.status, counted)
        shaping = Shaping.from_config(cfg) if faulty else None
        return response if shaping is None else dataclasses.replace(response, shaping=shaping)

    def _before_effect(self, request: Request, cfg: SandboxConfig) -> Response | None:
        retry_after = {"Retry-After": str(seconds_value(cfg.retry_after_seconds))}
        if not self.faults.admit(cfg.max_rps):
            self.state.count_fault("rate_limited")
            error = ProviderError(
                429, problems.RATE_LIMITED, "sandbox max_rps exceeded, retry later", retry_after
            )
            return problem_response(error, request.path)
        if cfg.latency_ms > 0:
            time.sleep(cfg.latency_ms / 1000)
        if cfg.envelope_error_code is not None:
            # An HTTP 200 whose envelope says error: the status alone would read it as a success.
            self.state.count_fault("envelope_error")
            said = {"code": cfg.envelope_error_code, "msg": cfg.envelope_error_msg}
            return Response(status=200, body=dumps({**said, "logId": secrets.token_hex(8)}))
        status = self.faults.pick_error(cfg)
        if status is None:
            return None
        self.state.count_fault(status)
        if status == "502":
            return bad_gateway_response()
        code, detail = _INJECTED[status]
        headers = retry_after if status == "429" else None
        return problem_response(ProviderError(int(status), code, detail, headers), request.path)

    def _run(self, operation: str, request: Request) -> Response:
        try:
            return self.operations[operation](request)
        except ProviderError as error:
            return problem_response(error, request.path)

    # --- operations -------------------------------------------------------------------------

    def _token(self, request: Request) -> Response:
        """Create Token: form-encoded ``client_id``/``client_secret`` (JSON with the same fields is
        accepted too); answered in the shape ``token_shape`` says (contract section 3)."""
        body = _token_fields(request)
        client_id = require_str(body, "client_id").encode()
        client_secret = require_str(body, "client_secret").encode()
        # Both compared, constant time, so a wrong id and a wrong secret look the same.
        id_ok = hmac.compare_digest(client_id, self._client_id)
        secret_ok = hmac.compare_digest(client_secret, self._client_secret)
        if not (id_ok and secret_ok):
            raise ProviderError(401, problems.AUTH_INVALID_CLIENT, "client credentials are invalid")
        refuse = self.state.config.token_refuse_status
        if refuse is not None:  # the switch: a credentials incident, as the provider shows it
            detail = "client credentials are invalid"
            raise ProviderError(refuse, problems.AUTH_INVALID_CLIENT, detail)
        token, ttl = self.state.issue_token()
        shape = self.state.config.token_shape
        lifetime = seconds_value(ttl)
        if shape == "envelope":
            return envelope({"accessToken": token, "expiresIn": lifetime}, code=200)
        if shape == "envelope_snake":
            return envelope(
                {"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}, code=200
            )
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if shape == "oauth":
            answer["expires_in"] = lifetime
        return Response(status=200, body=dumps(answer))

    def _create(self, request: Request) -> Response:
        self._authenticate(request)
        body = parse_json_object(request.body)
        transaction_type = require_transaction_type(body)
        transaction_id = require_str(body, "originalTransactionId")
        client_reference = require_str(body, "clientReference")
        participant = _participant(body.get("participantCode"))
        return self._idempotent(
            "create",
            request,
            body,
            lambda: self.state.create_refund(
                transaction_type, transaction_id, client_reference, participant
            ),
        )

    def _confirm(self, request: Request) -> Response:
        self._authenticate(request)
        body = parse_json_object(request.body)
        refund_id = require_str(body, "cryptoRefundId")
        address = body.get("refundAddress")
        if address is not None and not isinstance(address, str):
            raise invalid("refundAddress: must be a string")
        _participant(body.get("participantCode"))
        return self._idempotent(
            "confirm", request, body, lambda: self.state.confirm_refund(refund_id, address)
        )

    def _get(self, request: Request) -> Response:
        # No idempotency here: a replayed GET would freeze the status a poller is waiting on.
        self._authenticate(request)
        refund_id = request.query_value("cryptoRefundId") or None
        reference = request.query_value("clientReference") or None
        _participant(request.query_value("participantCode"))
        if refund_id is None and reference is None:
            raise invalid("cryptoRefundId or clientReference: one is required")
        return envelope(self.state.get_refund(refund_id=refund_id, client_reference=reference))

    # --- shared -----------------------------------------------------------------------------

    def _authenticate(self, request: Request) -> None:
        authorization = request.header("authorization") or ""
        scheme, _, token = authorization.partition(" ")
        self.state.check_token(token.strip() if scheme.lower() == "bearer" else None)

    def _idempotent(
        self,
        scope: str,
        request: Request,
        body: dict[str, Any],
        effect: Callable[[], dict[str, Any]],
    ) -> Response:
        """Do ``effect`` once per idempotency key; replay its stored response, errors included."""

        def action() -> Response:
            try:
                return envelope(effect())
            except ProviderError as error:
                return problem_response(error, request.path)

        key = request.header(IDEMPOTENCY_HEADER)
        if not key or not self.state.config.idempotency:
            return action()
        if len(key) > _MAX_IDEMPOTENCY_KEY:
            raise invalid(f"{IDEMPOTENCY_HEADER}: at most {_MAX_IDEMPOTENCY_KEY} characters")
        fingerprint = json.dumps(body, sort_keys=True, separators=(",", ":"))
        # Scoped by operation, not path: /v1.0 and /v2.0 are one provider.
        return self.state.once(scope, key, fingerprint, action)


def _participant(value: Any) -> str | None:
    """``participantCode`` (contract 2): optional; when given, a non-empty string."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise invalid("participantCode: must be a non-empty string when given")
    return value


def _token_fields(request: Request) -> dict[str, Any]:
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    if content_type == FORM:
        try:
            pairs = parse_qs(
                request.body.decode("ascii"), keep_blank_values=True, strict_parsing=False
            )
        except UnicodeDecodeError:
            raise invalid("token request: the form body must be ASCII (percent-encoded)") from None
        return {name: values[0] for name, values in pairs.items()}
    if content_type == "application/json":
        return parse_json_object(request.body)
    raise invalid(f"Content-Type: must be {FORM} (or application/json), got {content_type!r}")


def _recorded(operation: str, request: Request) -> dict[str, Any]:
    """What a test may read back from ``GET /sandbox/requests``: never a credential."""
    entry: dict[str, Any] = {
        "at": time.time(),  # when it arrived (epoch seconds): a test counts calls per interval
        "method": request.method,
        "path": request.path,
        "query": {name: values[0] for name, values in request.query.items()},
        "contentType": request.header("content-type"),
    }
    if operation == "token":
        try:
            fields = _token_fields(request)
        except ProviderError:
            fields = {}
        entry["body"] = {k: ("***" if "secret" in k.lower() else v) for k, v in fields.items()}
    else:
        try:
            entry["body"] = json.loads(request.body) if request.body else None
        except (ValueError, UnicodeDecodeError):
            entry["body"] = None
    return entry
