"""The store's Lua scripts: loaded from ``refunds/store/lua/*.lua`` and run by SHA.

Each script is a ``.lua`` file shipped as package data (``pyproject.toml``'s package-data), read
with ``importlib.resources`` and prefixed with ``lua/prelude.lua``, the helpers every script may
use (``now()``, Redis TIME read once per script; ``push_history``): one copy of each helper, and
still one atomic script per call.

:class:`Script` is the one place a script runs. It sends ``EVALSHA`` and, when Redis answers
NOSCRIPT (its script cache is empty after ``SCRIPT FLUSH``, a restart, or a failover to a replica
that never loaded it), loads the source and sends the call again: a script that was missing never
ran, so the retry cannot apply it twice. :class:`ScriptBatch` does the same for calls pipelined in
one round trip (intake's batches): the calls that came back NOSCRIPT are run again, the others'
answers are kept. Building either object sends nothing to Redis.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.exceptions import NoScriptError

__all__ = ["Script", "ScriptBatch", "source"]

PRELUDE = "prelude"

Arg = str | int | float


@cache
def source(name: str) -> str:
    """The text Redis runs for script ``name`` (``lua/{name}.lua``): the prelude, then the script.

    Raises FileNotFoundError naming the file when the package does not ship it.
    """
    folder = resources.files("refunds.store").joinpath("lua")
    prelude = folder.joinpath(f"{PRELUDE}.lua").read_text(encoding="utf-8")
    body = folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return f"{prelude}-- {name}.lua\n{body}"


class Script:
    """One script of ``lua/``, run on ``client`` by SHA and reloaded when Redis lost it."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.client = client
        self.name = name
        self.source = source(name)
        self.sha = hashlib.sha1(self.source.encode("utf-8"), usedforsecurity=False).hexdigest()

    def __call__(self, keys: Sequence[str] = (), args: Sequence[Arg] = ()) -> Any:
        """Run the script (EVALSHA); on NOSCRIPT, load it and run it once more."""
        try:
            return self._evalsha(self.client, keys, args)
        except NoScriptError:
            self.load()
            return self._evalsha(self.client, keys, args)

    def load(self) -> None:
        """Put the script in Redis's cache (SCRIPT LOAD)."""
        self.client.script_load(self.source)

    def queue(self, pipe: Any, keys: Sequence[str], args: Sequence[Arg]) -> None:
        """Add a call to ``pipe`` (see :class:`ScriptBatch`, which reruns it on NOSCRIPT)."""
        self._evalsha(pipe, keys, args)

    def _evalsha(self, target: Any, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return target.evalsha(self.sha, len(keys), *keys, *args)


class ScriptBatch:
    """Script calls sent in one pipelined round trip, answered in order.

    redis-py's own pipelined scripts ask ``SCRIPT EXISTS`` first (one more round trip per batch)
    and still fail if the cache is flushed in between; here a call answered NOSCRIPT is run again
    on its own after loading its script, and any other error is raised as the pipeline would.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._calls: list[tuple[Script, Sequence[str], Sequence[Arg]]] = []

    def add(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> None:
        self._calls.append((script, keys, args))

    def execute(self) -> list[Any]:
        if not self._calls:
            return []
        pipe = self.client.pipeline(transaction=False)
        for script, keys, args in self._calls:
            script.queue(pipe, keys, args)
        answers = list(pipe.execute(raise_on_error=False))
        for i, (script, keys, args) in enumerate(self._calls):
            if isinstance(answers[i], NoScriptError):
                answers[i] = script(keys, args)
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        self._calls = []
        return answers
