"""The MCE client: Create Token, Create, Confirm and Get, per the contract.

One ``requests.Session`` per process (connection reuse matters at thousands of calls per second;
sessions do not survive ``fork``, hence the pid check), a total deadline and an answer cap on every
call (``refunds.mce.deadline``), and no transport-level retries: a POST that may have taken
effect is retried only by the pipeline, under the same idempotency key, after recording what
happened. A 401 invalidates the token that was refused and replays the call once with a new one.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import requests
import urllib3

from config.settings import Settings
from refunds.errors import (
    MceAuthError,
    MceConnectionError,
    MceProtocolError,
    MceRateLimitedError,
    MceThrottledError,
    MceTimeoutError,
)
from refunds.mce.auth import TokenCache
from refunds.mce.contract import (
    CONFIRM_TAIL,
    CREATE_TAIL,
    GET_TAIL,
    IDEMPOTENCY_HEADER,
    SUCCESS_CODES,
    TOKEN_ID_FIELD,
    TOKEN_SECRET_FIELD,
)
from refunds.mce.deadline import AnswerTooLarge, GuardedAdapter, guarded, read_capped
from refunds.mce.errors import HttpAnswer, error_from_response, is_error_envelope
from refunds.mce.schemas import RefundData, TokenData
from refunds.ops.counters import Stats
from refunds.store.pacing import Pacer

# Fixed namespace: keys derived from it are the same in every process, on every machine, forever.
_KEY_NAMESPACE = uuid.UUID("6f1c2a52-6d0b-4b8e-9a57-2f6a3c1f9e10")

_session_lock = threading.Lock()
_session: tuple[int, requests.Session] | None = None


def idempotency_key(operation: str, client_reference: str, generation: int = 0) -> str:
    """The ``idempotency-key`` of one operation on one intent: identical on every attempt.

    Derived (UUID v5), not stored, so a worker that crashed before writing anything still sends
    the same key on the next attempt. ``generation`` changes only when an operator retries a refund
    that the provider answered with a business error, since replaying the old key would only
    replay the old error.
    """
    suffix = f":{generation}" if generation else ""
    return str(uuid.uuid5(_KEY_NAMESPACE, f"{operation}:{client_reference}{suffix}"))


def process_session(base_url: str, pool_size: int = 32) -> requests.Session:
    """The process's Session for MCE at ``base_url``, rebuilt after a fork (a forked pool would
    share sockets).

    requests reads the proxy and CA-bundle variables from the environment on every request
    (``trust_env``): about 5% of a worker's CPU in the throughput benchmark. A process's
    environment does not change, so they are read once here, as requests reads them
    (``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` unless ``NO_PROXY`` covers ``base_url``;
    ``REQUESTS_CA_BUNDLE``, else ``CURL_CA_BUNDLE``), and the per-request read is off. ``.netrc``
    is not read: MCE's credentials are the token call's, never a netrc's.
    """
    global _session  # noqa: PLW0603 - one per process by design
    with _session_lock:
        if _session is None or _session[0] != os.getpid():
            session = requests.Session()
            adapter = GuardedAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers["User-Agent"] = "refund-pipeline/0.1"
            session.trust_env = False
            session.proxies.update(requests.utils.get_environ_proxies(base_url))
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if bundle:
                session.verify = bundle
            _session = (os.getpid(), session)
        return _session[1]


@dataclass(frozen=True)
class Answer:
    """One answer, read whole (and within the cap) before anything looks at it."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes


class MceClient:
    """Typed calls to MCE. Errors are raised as the ``refunds.errors.MceError`` tree."""

    def __init__(
        self,
        settings: Settings,
        tokens: TokenCache | None = None,
        session: requests.Session | None = None,
        pacer: Pacer | None = None,
        stats: Stats | None = None,
        *,
        hold: Callable[[], str | None] | None = None,
    ) -> None:
        self.settings = settings
        self.session = session
        self.tokens = tokens
        self.pacer = pacer
        self.stats = stats
        # Why this client's calls must not go now (its participant is paused or disabled), or
        # None: checked before every call, so held work goes back on its timer (never lost).
        self.hold = hold
        self.calls: Counter[str] = Counter()

    def _http(self) -> requests.Session:
        return self.session or process_session(self.settings.mce_base_url or "")

    # --- operations -------------------------------------------------------------------------

    def fetch_token(self) -> TokenData:
        """Create Token: ``POST {base}/{version}{MCE_TOKEN_PATH}`` (contract section 3).

        Form-encoded ``client_id`` and ``client_secret`` by default (``MCE_TOKEN_ENCODING=json``
        sends the same two fields as JSON); no ``grant_type``. The answer may be OAuth or MCE's
        envelope (see ``TokenData.from_answer``); a 401/403 here raises MceAuthError /
        MceForbiddenError (our credentials are wrong: a cluster-wide condition).
        """
        settings = self.settings
        fields = {
            TOKEN_ID_FIELD: settings.mce_client_id,
            TOKEN_SECRET_FIELD: settings.client_secret.get_secret_value(),
        }
        as_form = settings.mce_token_encoding == "form"  # noqa: S105 - an encoding name
        body = self._call(
            "token",
            "POST",
            settings.mce_token_path,
            json=None if as_form else fields,
            data=fields if as_form else None,
            auth=False,
            envelope=False,
        )
        try:
            return TokenData.from_answer(body, settings.mce_token_default_lifetime)
        except ValueError:
            raise MceProtocolError(
                "MCE token answer has no usable access token or lifetime", operation="token"
            ) from None

    def create(
        self,
        *,
        original_transaction_type: int,
        original_transaction_id: str,
        client_reference: str,
        key: str,
    ) -> RefundData:
        body = {
            "originalTransactionType": original_transaction_type,
            "originalTransactionId": original_transaction_id,
            "clientReference": client_reference,
        }
        return self._refund("create", "POST", CREATE_TAIL, json=self._participant(body), key=key)

    def confirm(self, *, crypto_refund_id: str, refund_address: str | None, key: str) -> RefundData:
        body: dict[str, Any] = {"cryptoRefundId": crypto_refund_id}
        if refund_address:
            body["refundAddress"] = refund_address
        return self._refund("confirm", "POST", CONFIRM_TAIL, json=self._participant(body), key=key)

    def get(
        self, *, crypto_refund_id: str | None = None, client_reference: str | None = None
    ) -> RefundData:
        if bool(crypto_refund_id) == bool(client_reference):
            raise ValueError("give exactly one of crypto_refund_id and client_reference")
        params = (
            {"cryptoRefundId": crypto_refund_id}
            if crypto_refund_id
            else {"clientReference": client_reference}
        )
        return self._refund("get", "GET", GET_TAIL, params=self._participant(params))

    def _participant(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Add ``participantCode`` when ``MCE_PARTICIPANT_CODE`` is set, and only then.

        Every v2 create call carries it (PSPs act for several participants), but the seed's Create
        body omits it, so an unconfigured pipeline sends exactly the seed's fields (contract 2).
        """
        code = self.settings.mce_participant_code
        return {**fields, "participantCode": code} if code else fields

    # --- plumbing ---------------------------------------------------------------------------

    def _refund(self, operation: str, method: str, path: str, **kwargs: Any) -> RefundData:
        data = self._call(operation, method, path, **kwargs)
        try:
            return RefundData.model_validate(data)
        except ValueError:
            raise MceProtocolError(
                f"MCE {operation} answer is not a refund object", operation=operation
            ) from None

    def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        key: str | None = None,
        auth: bool = True,
        envelope: bool = True,
    ) -> Any:
        url = self.settings.api_url(path)
        headers = {"Accept": "application/json"}
        if key is not None:
            headers[IDEMPOTENCY_HEADER] = key
        for attempt in (1, 2):
            token = None
            if auth:
                if self.tokens is None:
                    raise RuntimeError("this client has no token cache")
                token = self.tokens.get()
                headers["Authorization"] = f"Bearer {token}"
            response = self._send(
                operation, method, url, json=json, data=data, params=params, headers=headers
            )
            if response.status_code == 401 and token is not None and attempt == 1:
                assert self.tokens is not None  # noqa: S101
                self.tokens.invalidate(token)
                continue
            try:
                return self._data(response, operation, envelope=envelope)
            except MceRateLimitedError as exc:
                if self.pacer is not None:
                    # The limit is per credentials: hold back every worker, not just this task.
                    self.pacer.push_back(exc.retry_after or self.settings.rate_limit_default_pause)
                raise
        raise MceAuthError("unreachable", operation=operation)  # pragma: no cover

    def _send(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        json: Any,
        params: dict[str, Any] | None,
        headers: dict[str, str],
        data: dict[str, Any] | None = None,
    ) -> Answer:
        """One HTTP exchange, paced cluster-wide, timed, counted, and mapped to typed errors.

        The whole exchange runs under one deadline (``Settings.http_deadline``: connect, then the
        head and the whole body), and the body is read in chunks up to the answer cap. Every
        request sent is counted, whatever becomes of it (an answer, a timeout, a broken
        connection, an oversized body, or the task being interrupted meanwhile).
        """
        held = self.hold() if self.hold is not None else None
        if held is not None:
            self._observe(operation, "held", None)
            raise MceThrottledError(
                f"MCE {operation} not sent: {held}",
                retry_after=self.settings.participant_hold_seconds,
                operation=operation,
            )
        if self.pacer is not None:
            wait = self.pacer.acquire()
            if wait is not None:
                self._observe(operation, "throttled", None)
                raise MceThrottledError(
                    f"MCE {operation} not sent: paced, next slot in {wait:.2f}s",
                    retry_after=wait,
                    operation=operation,
                )
        settings = self.settings
        self.calls[operation] += 1
        started = time.monotonic()
        outcome = "interrupted"  # kept only if something outside our control ends the call
        try:
            with guarded(settings.http_deadline) as guard:
                try:
                    response = self._http().request(
                        method,
                        url,
                        json=json,
                        data=data,
                        params=params,
                        headers=headers,
                        timeout=settings.http_timeout,
                        stream=True,
                    )
                    with contextlib.closing(response):
                        body = read_capped(response, settings.http_max_answer_bytes, guard)
                    if guard.fired:
                        raise requests.Timeout  # cut short by the watchdog: what came is partial
                except AnswerTooLarge as exc:
                    outcome = "oversized"
                    size = f"{exc.declared} bytes" if exc.declared else "a body"
                    raise MceProtocolError(
                        f"MCE {operation} answer refused: {size} over the "
                        f"{exc.cap}-byte cap (REFUNDS_HTTP_MAX_ANSWER_BYTES)",
                        status=response.status_code,
                        operation=operation,
                    ) from None
                except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                    if guard.expired() or isinstance(exc, requests.Timeout):
                        outcome = "timeout"
                        raise MceTimeoutError(
                            f"MCE {operation} timed out: no complete answer within "
                            f"{guard.seconds:g}s",
                            operation=operation,
                        ) from None
                    outcome = "connection"
                    # The message names the exception class only: requests' texts can embed URLs
                    # with query strings, and nothing here needs them.
                    raise MceConnectionError(
                        f"MCE {operation} connection failed ({type(exc).__name__})",
                        operation=operation,
                    ) from None
            outcome = str(response.status_code)
            return Answer(response.status_code, response.headers, body)
        finally:
            self._observe(operation, outcome, time.monotonic() - started)

    def _observe(self, operation: str, outcome: str, seconds: float | None) -> None:
        if self.stats is not None:
            self.stats.record_call(operation, outcome, seconds)

    @staticmethod
    def _data(response: HttpAnswer, operation: str, *, envelope: bool = True) -> Any:
        """The ``data`` of a success envelope (or, ``envelope=False``, the whole JSON body).

        JSON numbers are read as ``Decimal`` from their text (money must never pass through a
        float: ``1000.000000000000000001`` stays exactly that). An envelope whose ``code`` says
        error, in a 2xx answer, is mapped by the same function as an HTTP error status.
        """
        if not 200 <= response.status_code < 300:
            raise error_from_response(response, operation)
        try:
            # Amounts sent as JSON numbers are read as exact Decimals from the raw text, never
            # through float (1000.000000000000000001 must stay above a threshold of 1000); NaN
            # and Infinity reach the anomaly check instead of failing the parse.
            body = jsonlib.loads(response.content, parse_float=Decimal, parse_constant=Decimal)
        except (ValueError, UnicodeDecodeError):
            raise MceProtocolError(
                f"MCE {operation} answered HTTP {response.status_code} with a non-JSON body",
                status=response.status_code,
                operation=operation,
            ) from None
        if is_error_envelope(body):
            raise error_from_response(response, operation)
        if not envelope:
            return body
        code = body.get("code") if isinstance(body, dict) else None
        if not isinstance(code, int | str) or code not in SUCCESS_CODES:
            raise MceProtocolError(
                f"MCE {operation} answer is not an envelope (no code)",
                status=response.status_code,
                operation=operation,
            )
        if not isinstance(body.get("data"), dict):
            raise MceProtocolError(
                f"MCE {operation} answer has no data object",
                status=response.status_code,
                operation=operation,
            )
        return body["data"]
