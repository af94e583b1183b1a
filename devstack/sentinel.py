"""A local Redis Sentinel deployment: a primary, a replica and three Sentinels, as real processes.

For the failover tests (issue 8): every node is a real ``redis-server`` on a free 127.0.0.1 port
(Sentinels are the same binary started with ``--sentinel``, which is what the Debian
``redis-sentinel`` package runs), with short ``down-after-milliseconds`` and ``failover-timeout``
so a SIGKILLed primary is replaced within a few seconds. Helpers SIGKILL the primary, wait for the
promotion, and restart the old primary, which the Sentinels then reconfigure as a replica.

Only imports from devstack.localstack (free_port, find_redis_server, Child, wait_until).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from devstack.localstack import Child, find_redis_server, free_port, wait_until

MASTER_NAME = "refunds"
HOST = "127.0.0.1"

# Test timings: Sentinel marks the primary down after 1 s without an answer; a failover that
# stalls is retried after 3 s. Production values are in the tens of seconds.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000

# Sentinel's internal periods, which no config file sets: ``SENTINEL DEBUG`` (Redis 7.0+) changes
# them at run time, as Redis's own Sentinel tests do. The defaults make a test wait on them:
# - info-period (10 s): a restarted old primary still says "master" until the Sentinels' next
#   INFO to it, and they make it a replica only when it has said so for 4 publish periods; with
#   the defaults that re-add takes 10 s or more, with these 2-3 s;
# - publish-period (2 s): the hello messages by which Sentinels discover each other (start-up);
# - ping-period and ask-period (1 s): how soon a dead primary is seen down, and how soon a
#   Sentinel asks the others to agree (the failover itself still needs the quorum and a leader).
# Older Redis has no SENTINEL DEBUG: the cluster then runs with the defaults, only slower.
SENTINEL_DEBUG_PERIODS_MS = {
    "info-period": 1000,
    "publish-period": 500,
    "ping-period": 250,
    "ask-period": 250,
}


def _redis_args(port: int, workdir: Path, replica_of: int | None) -> list[str]:
    args = [
        find_redis_server(),
        "--port",
        str(port),
        "--bind",
        HOST,
        "--dir",
        str(workdir),
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--maxmemory-policy",
        "noeviction",
        "--protected-mode",
        "no",
        # Without these a replica that lost its primary answers with stale data; with them it
        # refuses, and clients go back to Sentinel for the new primary.
        "--replica-serve-stale-data",
        "no",
        "--repl-ping-replica-period",
        "1",
        # A primary waits this long (5 s by default) for more replicas before it streams a full
        # sync; with one replica that only delays the replica's start and the old primary's
        # return as a replica after a failover.
        "--repl-diskless-sync-delay",
        "0",
    ]
    if replica_of is not None:
        args += ["--replicaof", HOST, str(replica_of)]
    return args


def _sentinel_conf(path: Path, port: int, primary_port: int, down_after_ms: int) -> None:
    # Sentinel rewrites its own config file (it records the replicas and other Sentinels it
    # discovers), so each one gets a private, writable file.
    path.write_text(
        "\n".join(
            [
                f"port {port}",
                f"bind {HOST}",
                "protected-mode no",
                f"dir {path.parent}",
                f"sentinel monitor {MASTER_NAME} {HOST} {primary_port} 2",
                f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}",
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {MASTER_NAME} 1",
                "",
            ]
        )
    )


def _speed_up(sentinel_port: int) -> None:
    """Shorter internal periods for one Sentinel (see ``SENTINEL_DEBUG_PERIODS_MS``)."""
    args = [str(part) for item in SENTINEL_DEBUG_PERIODS_MS.items() for part in item]
    with contextlib.suppress(redis.ResponseError):  # Redis < 7.0: no SENTINEL DEBUG
        _client(sentinel_port).execute_command(  # type: ignore[no-untyped-call]
            "SENTINEL", "DEBUG", *args
        )


def _client(port: int) -> redis.Redis:
    return redis.Redis(
        host=HOST, port=port, socket_connect_timeout=0.5, socket_timeout=1, decode_responses=True
    )


@dataclass
class SentinelCluster:
    """One primary, one replica, three Sentinels; ``nodes`` maps a data port to its process."""

    workdir: Path
    down_after_ms: int = DOWN_AFTER_MS
    nodes: dict[int, Child] = field(default_factory=dict)
    sentinels: list[Child] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    initial_primary: int = 0

    # --- start and stop ---

    def start(self) -> SentinelCluster:
        primary = free_port()
        replica = free_port()
        self._start_node(primary, None)
        self._start_node(replica, primary)
        self.initial_primary = primary
        wait_until(lambda: self._replica_synced(replica), 20, f"replica {replica} in sync")
        for n in range(3):
            port = free_port()
            conf = self.workdir / f"sentinel-{n}" / "sentinel.conf"
            conf.parent.mkdir(parents=True, exist_ok=True)
            _sentinel_conf(conf, port, primary, self.down_after_ms)
            child = Child(
                f"sentinel-{n}",
                [find_redis_server(), str(conf), "--sentinel"],
                conf.parent / "sentinel.log",
            ).start()
            self.sentinels.append(child)
            self.sentinel_ports.append(port)
        for port, child in zip(self.sentinel_ports, self.sentinels, strict=True):
            wait_until(_client(port).ping, 15, f"sentinel on {port}", child)
            _speed_up(port)
        # Every Sentinel has found the replica and the other two Sentinels: a failover needs that.
        wait_until(self._sentinels_ready, 30, "sentinels discovering each other")
        return self

    def _start_node(self, port: int, replica_of: int | None) -> Child:
        workdir = self.workdir / f"redis-{port}"
        workdir.mkdir(parents=True, exist_ok=True)
        child = Child(
            f"redis-{port}", _redis_args(port, workdir, replica_of), workdir / "redis.log"
        ).start()
        wait_until(lambda: _client(port).ping(), 15, f"redis on {port}", child)
        self.nodes[port] = child
        return child

    def stop(self) -> None:
        for child in [*self.sentinels, *self.nodes.values()]:
            child.stop()

    # --- addresses and settings ---

    @property
    def sentinel_addrs(self) -> list[tuple[str, int]]:
        return [(HOST, port) for port in self.sentinel_ports]

    def env(self, db: int = 0) -> dict[str, str]:
        """The environment that points the pipeline's processes at this deployment."""
        return {
            "REDIS_SENTINELS": ",".join(f"{h}:{p}" for h, p in self.sentinel_addrs),
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
            # Only the db (and a password, if any) of REDIS_URL count with Sentinel.
            "REDIS_URL": f"redis://{HOST}:{self.initial_primary}/{db}",
        }

    # --- state, as the Sentinels and the nodes report it ---

    def primary_port(self) -> int | None:
        """The primary's port according to a majority of the live Sentinels (None: no majority)."""
        votes: dict[int, int] = {}
        for port, child in zip(self.sentinel_ports, self.sentinels, strict=True):
            if not child.alive:
                continue
            with contextlib.suppress(redis.RedisError):
                addr = _client(port).sentinel_get_master_addr_by_name(MASTER_NAME)
                if isinstance(addr, tuple):
                    votes[int(addr[1])] = votes.get(int(addr[1]), 0) + 1
        for port, count in votes.items():
            if count >= 2:
                return port
        return None

    def role(self, port: int) -> str | None:
        try:
            return str(_client(port).info("replication")["role"])
        except redis.RedisError:
            return None

    def _replica_synced(self, port: int) -> bool:
        info = _client(port).info("replication")
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def _sentinels_ready(self) -> bool:
        for port in self.sentinel_ports:
            fields = _client(port).sentinel_master(MASTER_NAME)
            if not isinstance(fields, dict):
                return False
            if int(fields["num-slaves"]) < 1 or int(fields["num-other-sentinels"]) < 2:
                return False
        return True

    # --- faults ---

    def kill_primary(self) -> int:
        """SIGKILL the current primary (no shutdown, no last sync); returns its port."""
        port = self.primary_port()
        if port is None:
            raise RuntimeError("no primary agreed by the Sentinels")
        self.nodes[port].kill()
        return port

    def wait_promotion(self, old_port: int, timeout: float = 30.0) -> int:
        """Wait until the Sentinels name another node primary and it answers as one; its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.primary_port()
            if port is not None and port != old_port and self.role(port) == "master":
                return port
            time.sleep(0.05)
        raise TimeoutError(f"no replica was promoted within {timeout:.0f}s:\n{self.sentinel_log()}")

    def restart_node(self, port: int, timeout: float = 30.0) -> Child:
        """Start the killed node again on its port (same data dir); Sentinel makes it a replica."""
        child = self._start_node(port, None)
        wait_until(
            lambda: self.role(port) == "slave" and self._replica_synced(port),
            timeout,
            f"old primary {port} reconfigured as a replica",
            child,
        )
        return child

    def sentinel_log(self, lines: int = 20) -> str:
        return "\n".join(child.tail(lines) for child in self.sentinels)


@contextlib.contextmanager
def sentinel_cluster(
    workdir: Path, down_after_ms: int = DOWN_AFTER_MS
) -> Iterator[SentinelCluster]:
    """Start a SentinelCluster under ``workdir``; stop every process on exit."""
    cluster = SentinelCluster(workdir, down_after_ms=down_after_ms)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
