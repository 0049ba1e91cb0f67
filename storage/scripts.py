"""Lua scripts: files in ``storage/lua``, loaded once, called by name.

Calls go by EVALSHA; after a Redis restart (``NOSCRIPT``) the script is loaded again
and the call repeated, which is safe because a NOSCRIPT call ran nothing.

    >>> scripts = Scripts()
    >>> scripts.run(client, "ingest", keys=[...], args=[...])
    >>> scripts.run_many(client, "match", [(keys, args), ...])  # one pipelined round trip
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import redis
from redis.exceptions import NoScriptError

LUA_DIR = Path(__file__).with_name("lua")


class Scripts:
    def __init__(self, directory: Path = LUA_DIR) -> None:
        self._source: dict[str, str] = {}
        self._sha: dict[str, str] = {}
        for path in sorted(directory.glob("*.lua")):
            text = path.read_text()
            self._source[path.stem] = text
            self._sha[path.stem] = hashlib.sha1(text.encode()).hexdigest()

    def names(self) -> list[str]:
        return sorted(self._source)

    def sha(self, name: str) -> str:
        """The SHA1 EVALSHA needs, for callers that send on their own connection."""
        return self._sha[name]

    def source(self, name: str) -> str:
        """The script's text, for SCRIPT LOAD after a NOSCRIPT."""
        return self._source[name]

    def load_all(self, client: redis.Redis) -> None:
        for text in self._source.values():
            client.script_load(text)

    def run(self, client: redis.Redis, name: str, keys: Sequence, args: Sequence = ()):
        """EVALSHA ``name``; on NOSCRIPT load it and call again."""
        sha = self._sha[name]
        try:
            return client.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self._source[name])
            return client.evalsha(sha, len(keys), *keys, *args)

    def run_many(
        self, client: redis.Redis, name: str, calls: Sequence[tuple[Sequence, Sequence]]
    ) -> list:
        """One pipelined round trip of EVALSHA calls; returns each result or exception.

        Calls that met NOSCRIPT ran nothing, so they are sent again once the script is
        loaded. Other errors are returned in place, for the caller to judge per call.
        """
        sha = self._sha[name]
        results = self._pipeline(client, sha, calls)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            client.script_load(self._source[name])
            again = self._pipeline(client, sha, [calls[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    @staticmethod
    def _pipeline(client: redis.Redis, sha: str, calls) -> list:
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(sha, len(keys), *keys, *args)
        return pipe.execute(raise_on_error=False)


_default: Scripts | None = None


def default_scripts() -> Scripts:
    """The process-wide registry (files are read once)."""
    global _default
    if _default is None:
        _default = Scripts()
    return _default
