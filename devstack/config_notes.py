"""What each setting means, by environment name: the configuration reference's last column.

Used by ``devstack.config_docs`` for a setting whose field carries no ``description``; a field's
own description wins. Meanings only: names, types and defaults come from ``Settings`` itself.
"""

from __future__ import annotations

NOTES: dict[str, str] = {
    "MCE_API_VERSION": ("the path prefix of every call (`v2.0` for the v2 docs' paths)"),
    "MCE_BASE_URL": ("MCE API base URL (sandbox profile: `http://127.0.0.1:8099`)"),
    "MCE_CLIENT_ID": ("client id for Create Token (sandbox profile: the simulator's)"),
    "MCE_CLIENT_SECRET": ("client secret (secret)"),
    "MCE_MAX_RPS": ("requests per second to MCE, for the whole cluster together"),
    "MCE_PARTICIPANT_CODE": (
        "sent as `participantCode` in Create and Confirm bodies and the Get query, only when set"
    ),
    "MCE_TOKEN_DEFAULT_LIFETIME": ("the token lifetime assumed when the token answer gives none"),
    "MCE_TOKEN_ENCODING": (
        "Create Token's body encoding (`form` or `json`; fields `client_id`, `client_secret`)"
    ),
    "MCE_TOKEN_PATH": ("Create Token's path under the version"),
    "MCE_WEBHOOK_SECRET": ("webhook signing secret (secret)"),
    "REDIS_SENTINELS": (
        "`host:port,host:port,...` of the Sentinels: every Redis client (broker via "
        "`sentinel://`, ledger, web, CLI, Flower) follows the primary they name (see Topology and"
        " HA); set together with `REDIS_SENTINEL_MASTER`, or neither"
    ),
    "REDIS_SENTINEL_MASTER": (
        "the master name the Sentinels monitor; set together with `REDIS_SENTINELS`, or neither"
    ),
    "REDIS_SENTINEL_PASSWORD": ("password of the Sentinels themselves (secret), if they have one"),
    "REDIS_URL": (
        "broker, ledger, timers, locks, pace and counters (with Sentinel: only its db number and "
        "password count)"
    ),
    "REFUNDS_AGE_ALERT_AFTER": (
        "a refund in flight (not final, not held, not needs_attention) older than this raises the"
        " age alert: `refunds stats`, metric `refunds_age_alert`, `python -m refunds.ops.health "
        "--alerts`"
    ),
    "REFUNDS_API_KEY": (
        "the HTTP API's intake key, header `X-API-Key` (secret; sandbox profile: `sandbox-api-key`)"
    ),
    "REFUNDS_APPROVAL_THRESHOLDS": (
        "`CUR=AMOUNT,...` or JSON: amounts above which Confirm waits for approval"
    ),
    "REFUNDS_AUTH_PAUSE_SECONDS": (
        "after MCE's token endpoint refuses our credentials (401/403): every provider call of the"
        " cluster pauses this long, one token call per pause probes; one ERROR log per incident, "
        "metric `refunds_mce_credentials_refused`, health probe red"
    ),
    "REFUNDS_CALLBACK_SECRET": ("the key of the callback's HMAC signature (secret)"),
    "REFUNDS_CALLBACK_TIMEOUT": ("callback request timeout (below the soft time limit)"),
    "REFUNDS_CALLBACK_URL": ("signed HTTP callback of each final outcome (`X-Refunds-Signature`)"),
    "REFUNDS_CONSOLE_READ_ONLY": (
        "the whole console (`/console`) is read-only: no action buttons, every action refused (403)"
    ),
    "REFUNDS_CONSOLE_SECRET": (
        "signs the console's session cookies (secret); unset outside the sandbox: the console is "
        "off (sandbox: a random one per process)"
    ),
    "REFUNDS_CONSOLE_SECURE_COOKIE": (
        "the console cookie's `Secure` flag (HTTPS only); unset: on outside the sandbox profile"
    ),
    "REFUNDS_CONSOLE_SESSION_SECONDS": ("a console sign-in expires this long after it was made"),
    "REFUNDS_CONFIRM_INLINE": (
        "Confirm right after a Create in the same `refunds.create` task, under the same lock, "
        "while the soft time limit still leaves a whole step's call budget (2 x (connect + read "
        "timeout)); `false`: Confirm is always a `refunds.confirm` task of its own (one more "
        "message per refund)"
    ),
    "REFUNDS_DISPATCH_LEASE_SECONDS": (
        "\"dispatched, not started\": how long a dispatched step message (the tick's, a step's "
        "nudge, an operator's approve or retry) may wait before it is sent again with a newer "
        "fence (doubling per unstarted dispatch, up to 16x)"
    ),
    "REFUNDS_GIVE_UP_AFTER": (
        "how long a streak of transient failures (from its first failure; a success ends it) is "
        "retried before `needs_attention`; seconds or a duration (`90m`, `24 h`, `2d`). Permanent"
        " errors stop at once. `REFUNDS_MAX_ATTEMPTS` is deprecated and ignored (a warning at "
        "start)"
    ),
    "REFUNDS_HELD_POLL_SECONDS": ("how often a refund held for approval is read at the provider"),
    "REFUNDS_HTTP_CONNECT_TIMEOUT": (
        "connect timeout of every provider call; twice the sum of connect and read timeouts (a "
        "token fetch, then the call) must be below the soft time limit, or the process refuses to"
        " start"
    ),
    "REFUNDS_HTTP_READ_TIMEOUT": (
        "read timeout of every provider call (see `REFUNDS_HTTP_CONNECT_TIMEOUT`)"
    ),
    "REFUNDS_LEASE_SECONDS": (
        "the safety-net delay of intake, and the cap of the dispatch lease (must exceed the task "
        "time limit)"
    ),
    "REFUNDS_LOG_JSON": ("one JSON object per log line (false: plain text)"),
    "REFUNDS_LOG_LEVEL": ("log level of every process"),
    "REFUNDS_MAX_ATTEMPTS": (
        "deprecated and ignored (a warning at start names `REFUNDS_GIVE_UP_AFTER`)"
    ),
    "REFUNDS_MAX_BODY_BYTES": (
        "request body limit of every HTTP route, webhooks included (413 above it; the old name "
        "`REFUNDS_WEBHOOK_MAX_BODY_BYTES` still works)"
    ),
    "REFUNDS_MIN_REPLICA_ACKS": (
        "after intake and operator actions, wait (`WAIT`) until this many replicas have the "
        'write; fewer in time: "not durably stored, retry" (HTTP 503 + `Retry-After`, CLI exit '
        "75, `NotDurableError`)"
    ),
    "REFUNDS_NOTIFY_GIVE_UP_AFTER": (
        "how long a failing notification (either channel) is retried before it becomes a dead "
        "letter (`refunds notifications dead` / `replay`)"
    ),
    "REFUNDS_NOTIFY_PUBLISH_TIMEOUT": (
        "how long the broker has to accept a notification before the attempt counts as failed "
        "(below the soft time limit)"
    ),
    "REFUNDS_NOTIFY_QUEUE": (
        "the queue that task is published to: the merchant worker's; one of our own queues is "
        "refused at start"
    ),
    "REFUNDS_NOTIFY_RETRY_BASE_SECONDS": (
        "first backoff between delivery attempts (exponential, capped, equal jitter)"
    ),
    "REFUNDS_NOTIFY_RETRY_MAX_SECONDS": ("cap of the backoff between delivery attempts"),
    "REFUNDS_NOTIFY_TASK": ("Celery task told each final outcome"),
    "REFUNDS_NOT_FOUND_GRACE_SECONDS": (
        "a Get's not-found this soon after Create is read lag, retried"
    ),
    "REFUNDS_OPERATOR_API_KEY": (
        "one operator key, recorded as `operator` (secret); neither set: operator routes answer 403"
    ),
    "REFUNDS_OPERATOR_KEYS": (
        "operator credentials for the operator routes, `name:key,name:key`; the name is recorded "
        "as who acted (secret; sandbox profile, when neither operator setting is set: "
        "`sandbox-operator:sandbox-operator-key`)"
    ),
    "REFUNDS_PACING_MAX_WAIT": (
        "a paced call waits at most this long in its slot; longer and the step goes back on the "
        "timer"
    ),
    "REFUNDS_POLL_SCHEDULE": (
        "seconds between Gets while processing (durable timers, up to 3600 each); the last repeats"
    ),
    "REFUNDS_PROFILE": (
        "`sandbox` fills in the simulator's URL and credentials; `production` refuses to start "
        "with a missing or placeholder secret"
    ),
    "REFUNDS_RATE_LIMIT_DEFAULT_PAUSE": (
        "how long the cluster backs off after a 429 without `Retry-After`"
    ),
    "REFUNDS_REPLICA_ACK_TIMEOUT_MS": (
        "how long (ms) intake and operator actions wait for `REFUNDS_MIN_REPLICA_ACKS` replicas"
    ),
    "REFUNDS_RETRY_BASE_SECONDS": (
        "first backoff of transient errors (full jitter, doubling, capped)"
    ),
    "REFUNDS_RETRY_MAX_SECONDS": ("cap of the backoff of transient errors"),
    "REFUNDS_STEP_LEASE_SECONDS": (
        "a running step's lock and its refund's timer stay this far ahead, renewed every third of"
        " it: a dead worker's refund is due again within about this long (below "
        "`REFUNDS_LEASE_SECONDS`)"
    ),
    "REFUNDS_TASK_SOFT_TIME_LIMIT": (
        "Celery soft time limit of a step; soft < hard < `REFUNDS_LEASE_SECONDS`, checked at start"
    ),
    "REFUNDS_TASK_TIME_LIMIT": ("Celery hard time limit of a step (see the soft one)"),
    "REFUNDS_TICK_BATCH": ("at most this many due refunds claimed per scheduler tick"),
    "REFUNDS_TICK_INTERVAL": ("how often beat sends the scheduler tick"),
    "REFUNDS_TOKEN_LOCK_SECONDS": ("how long one process holds the cluster's token-refresh lock"),
    "REFUNDS_TOKEN_REFRESH_FRACTION": (
        "refresh a token this fraction of its lifetime before expiry"
    ),
    "REFUNDS_TOKEN_REFRESH_MAX_MARGIN": ("... but at most this many seconds before expiry"),
    "REFUNDS_TOKEN_WAIT_SECONDS": (
        "how long a process waits for another's token refresh before failing the call (transient)"
    ),
    "REFUNDS_VIEWER_KEYS": (
        "read-only console credentials, `name:key,name:key`: see everything, act on nothing "
        "(secret; each must differ from the intake and operator keys)"
    ),
    "REFUNDS_WEBHOOKS_EXPECTED": (
        "`true` when MCE sends its webhook to this deployment's `/webhooks/mce`: polling becomes "
        "the safety net (below)"
    ),
    "REFUNDS_WEBHOOK_GRACE_SECONDS": (
        "with webhooks expected, the first Get of a confirmed refund waits this long (the window "
        "in which MCE's webhook normally arrives)"
    ),
    "REFUNDS_WEBHOOK_TOLERANCE_SECONDS": (
        "webhook timestamp tolerance, either way (compared in ms)"
    ),
}
