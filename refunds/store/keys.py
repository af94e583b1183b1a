"""Every Redis key the pipeline uses, in one place: the only module that spells ``rp:``.

Code outside ``refunds/store/`` never builds a key (``tests/unit/test_layering.py`` checks), so a
change of layout or an atomicity fix stays inside the store. Short names and short field names
because 100,000 refunds in flight must stay small.

========================== ====== ================ ==========================================
key                        type   lifetime         holds
========================== ====== ================ ==========================================
``rp:r:{ref}``             hash   forever          one refund record (fields: codec.FIELDS, and
                                                   a running step's lease ``lk``/``lku``: see
                                                   store.locks; no key of its own; the dispatch
                                                   ids ``disp``/``start``, and ``lost``: the last
                                                   one lost with its worker, store.workers)
``rp:hl:{ref}``            list   forever          its history, one JSON line per transition
                                                   (RPUSH: one command per write, no read)
``rp:h:{ref}``             string forever          the history written before ``rp:hl`` (lines
                                                   joined by newlines; read first, never written)
``rp:state:{state}``       set    forever          references per state (listing, counts)
``rp:all``                 zset   forever          references by creation time
``rp:inflight``            zset   while in flight  references in a state the pipeline moves
                                                   (store.inflight.IN_FLIGHT_STATES), by
                                                   creation time: the oldest in one ZRANGE
``rp:conflicts``           set    forever          references whose record carries a provider
                                                   ``conflict`` mark not yet acknowledged
                                                   (``list --conflicts``, ``conflicts ack``)
``rp:rid:{refundId}``      string forever          the reference whose record first recorded
                                                   this cryptoRefundId (webhooks match on it)
``rp:pay:{type}:{txnId}``  string forever          the reference that refunds this original
                                                   payment (written by the intake script with
                                                   the record: one payment, one reference; the
                                                   id byte-exact, as MCE compares it). A later
                                                   reference takes it over only once the holder
                                                   is ``cancelled`` (nothing was confirmed)
``rp:timers``              zset   until final/held references by due time (leased by the tick)
``rp:tick:last``           string overwritten      time of the scheduler's last tick (float)
``rp:beat:lock``           string 4 ticks (>= 2 s) the one beat that may send ticks (host:pid:nonce)
``rp:workers``             zset   until swept      live workers (``host:pid``) by last liveness beat
``rp:worker:{name}``       hash   until swept      ref -> fence of the step messages the worker
                                                   holds (reserved or running): see
                                                   store.workers
``rp:outbox``              zset   until delivered  ``task:{ref}``/``http:{ref}`` by due time
``rp:outbox:attempts``     hash   until delivered  outbox member -> failed delivery attempts
``rp:outbox:failing``      hash   until delivered  outbox member -> JSON ``{"first", "error"}``:
                                                   Redis time of its first failed attempt, last
                                                   error
``rp:outbox:dead``         zset   forever          outbox members given up on, by time
``rp:outbox:dead:info``    hash   until replayed   dead member -> JSON ``{"attempts", "error",
                                                   "first", "at"}`` (``refunds notifications dead``)
``rp:wh:{notificationId}`` hash   EVENT_TTL (30 d) one MCE webhook event: body, status,
                                                   received_at, error, ref
``rp:wh:parked:{ref}``     zset   EVENT_TTL (30 d) event ids waiting for their refund, by time
``rp:kyt:events``          zset   EVENT_TTL (30 d) payment webhook ids by time received (the
                                                   backtest's replay list; store/kyt.py)
``rp:stats:kyt:matches``   hash   forever          ``{rule}|{action}|{mode}`` -> rule matches
``rp:stats:kyt:alerts``    hash   forever          ``unmapped``/``denied`` -> KYT alerts
``rp:mce:token``           hash   token expiry     bearer token: token, expires, refresh
``rp:mce:token:lock``      string lock timeout     single-flight lock of a token refresh
``rp:pace:tat``            string idle + 1 s       GCRA time of the next provider call slot
``rp:mce:auth:refused``    string pause x 10        the token endpoint refused our credentials
                                                   (time first seen); SET NX: who logs
``rp:mce:auth:probe``      string one pause        the one token call allowed per pause while
                                                   credentials are refused
``rp:cred:{id}:token``     hash   token expiry     one registry credential's bearer token (as
                                                   ``rp:mce:token``); without a registry file the
                                                   one credential keeps the ``rp:mce:*`` keys
``rp:cred:{id}:token:lock`` string lock timeout    its refresh lock
``rp:cred:{id}:pace``      string idle + 1 s       its GCRA schedule (its own ``max_rps``)
``rp:cred:{id}:refused``   string pause x 10       the token endpoint refused this credential
``rp:cred:{id}:probe``     string one pause        its one probe per pause
``rp:participants:paused`` hash   until resumed    participantCode -> JSON ``{"at", "by",
                                                   "reason"}``: an operator paused its calls
``rp:stats:participants:submitted`` hash forever  participantCode -> refunds submitted (with a
                                                   registry file only)
``rp:stats:calls``         hash   forever          ``{operation}|{outcome}`` -> count
``rp:stats:latency``       hash   forever          ``{operation}|{bucket}`` -> count, ``|sum``
``rp:stats:errors:{min}``  hash   2 hours          error code -> count in one epoch minute
``rp:stats:webhooks``      hash   forever          webhook outcome -> count
``rp:stats:conflicts``     hash   forever          provider conflict kind -> count
``rp:stats:token_fetches`` string forever          Create Token calls made (integer)
``rp:durability:probe``    string forever          a counter written before ``WAIT`` (replica acks)
``rp:arch``                stream until archived   the archive queue: one entry per record write,
                                                   stored webhook, webhook outcome, notification
                                                   outcome (XADD in the writing script); deleted
                                                   once committed to SQL (``refunds.archive``)
``rp:arch:lock``           string lock timeout     the one archiver draining (token, PX)
``rp:gone``                set    forever          references whose record left Redis for the
                                                   archive (intake tombstones: one member each)
``rp:epoch``               string forever          JSON: the ledger's epoch (random ``id``,
                                                   ``created``, ``origin`` start/ack, ``by``,
                                                   ``reason``, ``replaces``): store/epoch.py
``rp:epoch:lost``          string until acked      JSON: a detected loss of the ledger
                                                   (``previous``, ``found``, ``detected``, ``by``)
``rp:health:probe``        string forever          "1", written by health probes (a write that
                                                   fails under OOM or on a replica)
========================== ====== ================ ==========================================

"forever" means until an operator deletes it. A final record (hash, history, state and index
entries) leaves Redis ``REFUNDS_HOT_RETENTION`` after it turned final, once archived at its
current version (``refunds.store.archive_queue``); its reference stays in ``rp:gone``.
"""

from __future__ import annotations

PREFIX = "rp:"

# --- ledger (store/ledger.py) ---------------------------------------------------------------------
ALL = PREFIX + "all"
IN_FLIGHT = PREFIX + "inflight"


def record_key(ref: str) -> str:
    return f"{PREFIX}r:{ref}"


def history_key(ref: str) -> str:
    """The history list (one JSON line per transition, oldest first)."""
    return f"{PREFIX}hl:{ref}"


def legacy_history_key(ref: str) -> str:
    """The history string of releases before the list (newline-joined lines): read, not written."""
    return f"{PREFIX}h:{ref}"


STATE_PREFIX = PREFIX + "state:"  # for scripts that move a reference between state sets


def state_key(state: str) -> str:
    return f"{STATE_PREFIX}{state}"


RECORD_PREFIX = PREFIX + "r:"  # for the intake script, which reads the payment's holder's record


def payment_key(transaction_type: int, transaction_id: str) -> str:
    """(originalTransactionType, originalTransactionId) -> the clientReference refunding it."""
    return f"{PREFIX}pay:{transaction_type}:{transaction_id}"


def refund_id_key(crypto_refund_id: str) -> str:
    """cryptoRefundId -> clientReference, written by the ledger's transition script."""
    return f"{PREFIX}rid:{crypto_refund_id}"


RECORD_PATTERN = PREFIX + "r:*"  # SCAN pattern over every record
CONFLICTS = PREFIX + "conflicts"  # references whose record carries a provider conflict mark


def record_pattern(ref_prefix: str) -> str:
    """SCAN pattern over the records whose reference starts with ``ref_prefix`` (references
    hold no glob characters: ``refunds.identifiers`` allows only ``A-Za-z0-9`` and ``-_.:@+=``)."""
    return f"{record_key(ref_prefix)}*"


# --- timers (store/timers.py) ---------------------------------------------------------------------
TIMERS = PREFIX + "timers"
LAST_TICK = PREFIX + "tick:last"
BEAT_LOCK = PREFIX + "beat:lock"  # the beat that holds it is the only one that sends ticks

# --- worker liveness (store/workers.py) ---------------------------------------------------------
WORKERS = PREFIX + "workers"  # worker name -> Redis time of its last liveness beat


def worker_key(name: str) -> str:
    """The step messages worker ``name`` holds (ref -> fence), as of its last beat."""
    return f"{PREFIX}worker:{name}"


# --- outbox (store/outbox.py) ---------------------------------------------------------------------
OUTBOX = PREFIX + "outbox"
OUTBOX_ATTEMPTS = PREFIX + "outbox:attempts"
OUTBOX_DEAD = PREFIX + "outbox:dead"
OUTBOX_FAILING = PREFIX + "outbox:failing"  # member -> first failure time and last error (JSON)
OUTBOX_DEAD_INFO = PREFIX + "outbox:dead:info"  # dead member -> attempts, error, first, at (JSON)

# --- webhook events (store/events.py) -------------------------------------------------------------


def event_key(notification_id: str) -> str:
    return f"{PREFIX}wh:{notification_id}"


def parked_key(ref: str) -> str:
    return f"{PREFIX}wh:parked:{ref}"


# --- KYT intake (store/kyt.py) --------------------------------------------------------------------
KYT_EVENTS = PREFIX + "kyt:events"
KYT_MATCHES = PREFIX + "stats:kyt:matches"
KYT_ALERTS = PREFIX + "stats:kyt:alerts"

# --- token cache (store/tokens.py) ----------------------------------------------------------------
TOKEN = PREFIX + "mce:token"
TOKEN_LOCK = PREFIX + "mce:token:lock"

# --- pacing (store/pacing.py) ---------------------------------------------------------------------
PACE = PREFIX + "pace:tat"
AUTH_REFUSED = PREFIX + "mce:auth:refused"
AUTH_PROBE = PREFIX + "mce:auth:probe"


# --- per credential (store/tokens.py, store/pacing.py) ------------------------------------------
# ``credential=None`` is the one credential of a deployment without a registry file: its keys are
# the single-credential keys above, so a deployment's cached token and schedule survive upgrades.


def credential_token_key(credential: str | None) -> str:
    return TOKEN if credential is None else f"{PREFIX}cred:{credential}:token"


def credential_token_lock_key(credential: str | None) -> str:
    return TOKEN_LOCK if credential is None else f"{PREFIX}cred:{credential}:token:lock"


def credential_pace_key(credential: str | None) -> str:
    return PACE if credential is None else f"{PREFIX}cred:{credential}:pace"


def credential_refused_key(credential: str | None) -> str:
    return AUTH_REFUSED if credential is None else f"{PREFIX}cred:{credential}:refused"


def credential_probe_key(credential: str | None) -> str:
    return AUTH_PROBE if credential is None else f"{PREFIX}cred:{credential}:probe"


# --- participants (store/participants.py) ---------------------------------------------------------
PARTICIPANTS_PAUSED = PREFIX + "participants:paused"
PARTICIPANTS_SUBMITTED = PREFIX + "stats:participants:submitted"

# --- counters (store/counters.py) -----------------------------------------------------------------
CALLS = PREFIX + "stats:calls"
LATENCY = PREFIX + "stats:latency"
WEBHOOKS = PREFIX + "stats:webhooks"
CONFLICT_KINDS = PREFIX + "stats:conflicts"
TOKEN_FETCHES = PREFIX + "stats:token_fetches"


def errors_key(minute: int) -> str:
    """The error counts of one epoch minute (``int(time.time() // 60)``)."""
    return f"{PREFIX}stats:errors:{minute}"


# --- durability (store/connection.py) -------------------------------------------------------------
DURABILITY_PROBE = PREFIX + "durability:probe"


# --- archive (store/archive_queue.py; the XADDs sit in the writing scripts) -----------------------
ARCHIVE_QUEUE = PREFIX + "arch"
ARCHIVE_LOCK = PREFIX + "arch:lock"
ARCHIVED_REFS = PREFIX + "gone"

# --- epoch (store/epoch.py) -----------------------------------------------------------------------
EPOCH = PREFIX + "epoch"
EPOCH_LOST = PREFIX + "epoch:lost"
HEALTH_PROBE = PREFIX + "health:probe"
