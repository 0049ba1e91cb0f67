"""Lua scripts: files in ``storage/lua``, loaded once, called by name. The only place
that runs Lua.

Calls go by EVALSHA; a ``NOSCRIPT`` reply (Redis restarted, a node added to the cluster)
ran nothing, so the script is loaded (on every primary of a cluster) and the call sent
again, here and nowhere else, single calls and pipelines alike.

    >>> scripts = Scripts()
    >>> scripts.run(client, "ingest", keys=[...], args=[...])
    >>> scripts.run_many(client, "match", [(keys, args), ...])  # one pipelined round trip
    >>> scripts.run_packed(client, "ingest", [(keys, args), ...])  # the same, packed
    >>> pipe = scripts.pipe(client, "match")                    # the matcher's fast path:
    >>> pipe.send([(keys, args), ...]); ...; pipe.receive()     # sent now, read later

Every call's keys lie in one hash slot (each script's header says which). On a cluster,
redis-py splits a pipeline per node, so ``run_many`` is one round trip per node touched.
``run_packed`` and ``pipe`` are the fast path for calls with many arguments (the edge's
batches, the matcher's): packed by hiredis in one go and written to every node before
any reply is read, so a cluster costs one round trip, not one per node.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from redis import exceptions
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

try:
    from hiredis import pack_command
except ImportError:  # pragma: no cover - a dependency (redis[hiredis])
    pack_command = None

LUA_DIR = Path(__file__).with_name("lua")

Call = tuple[Sequence, Sequence]
#: Error replies that say the call ran nothing where it was sent (a cluster redirect).
_RAN_NOTHING = ("MOVED", "ASK", "TRYAGAIN")
#: A node's connection lost or timed out: its calls may or may not have run.
LOST = (exceptions.ConnectionError, exceptions.TimeoutError)


class NotSent(exceptions.ConnectionError):
    """No connection to the call's node could be made: the call was not sent, so it ran
    nothing (unlike a connection lost after sending)."""


class Scripts:
    def __init__(self, directory: Path = LUA_DIR) -> None:
        self._source: dict[str, str] = {}
        self._sha: dict[str, str] = {}
        for path in sorted(directory.glob("*.lua")):
            text = path.read_text()
            self._source[path.stem] = text
            self._sha[path.stem] = hashlib.sha1(text.encode()).hexdigest()

    def load(self, client, name: str) -> None:
        """SCRIPT LOAD ``name`` (on every primary of a cluster)."""
        client.script_load(self._source[name])

    def load_all(self, client) -> None:
        for name in self._source:
            self.load(client, name)

    def run(self, client, name: str, keys: Sequence, args: Sequence = ()):
        """EVALSHA ``name``; on NOSCRIPT load it and call again."""
        sha = self._sha[name]
        try:
            return client.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            self.load(client, name)
            return client.evalsha(sha, len(keys), *keys, *args)

    def run_many(self, client, name: str, calls: Sequence[Call], extra: Sequence = ()) -> list:
        """One pipelined round trip (per node) of EVALSHA calls; each result or exception.

        ``extra`` are more commands, argument tuples such as ``("GET", key)``, sent in the
        same pipeline after the calls; their replies follow the calls' in the result.
        Calls that met NOSCRIPT ran nothing, so they are sent again once the script is
        loaded. Other errors are returned in place, for the caller to judge per call.
        """
        sha = self._sha[name]
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            # execute_command: a cluster pipeline routes EVALSHA by its keys this way.
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        for command in extra:
            pipe.execute_command(*command)
        results = pipe.execute(raise_on_error=False)
        missing = [i for i, r in enumerate(results[: len(calls)]) if isinstance(r, NoScriptError)]
        if missing:
            self.load(client, name)
            again = self.run_many(client, name, [calls[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    def commands(self, client, commands: Sequence[tuple]) -> list:
        """Plain commands (argument tuples), one round trip per node, raw: the matcher's
        click reads. Each reply, or its error; a call redirected or refused for a moved
        slot goes again through a redis-py pipeline, which follows the redirect."""
        results = _raise_lost(_send_packed(client, list(commands), list(commands)))
        again = [i for i, r in enumerate(results) if _ran_nothing(r)]
        if again:
            pipe = client.pipeline(transaction=False)
            for i in again:
                pipe.execute_command(*commands[i])
            for i, reply in zip(again, pipe.execute(raise_on_error=False), strict=True):
                results[i] = reply
        return results

    def run_packed(self, client, name: str, calls: Sequence[Call]) -> list:
        """What :meth:`run_many` does, packed by hiredis and sent to every node at once.

        Each call's reply or its exception, in order. A call answered NOSCRIPT, MOVED,
        ASK or TRYAGAIN, or not sent because its node could not be reached, ran nothing:
        it goes again through :meth:`run_many` (which loads the script, or lets the
        cluster client follow the redirect or reload its slot table). A call whose node's
        connection was lost after sending gets that error (``LOST``): whether it ran is
        unknown, so it is not sent again here.
        """
        if pack_command is None:  # pragma: no cover - hiredis comes with redis[hiredis]
            return self.run_many(client, name, calls)
        sha = self._sha[name]
        commands = [("EVALSHA", sha, len(keys), *keys, *args) for keys, args in calls]
        results = _send_packed(client, commands, [keys[0] for keys, _ in calls])
        again = [i for i, result in enumerate(results) if _ran_nothing(result)]
        if again:
            try:
                replies = self.run_many(client, name, [calls[i] for i in again])
            except LOST as exc:
                replies = [exc] * len(again)
            for i, reply in zip(again, replies, strict=True):
                results[i] = reply
        return results

    def pipe(self, client, name: str) -> ScriptPipe:
        return ScriptPipe(self, client, name)


class ScriptPipe:
    """Batches of one script's calls sent now and their replies read later, in order.

    The matcher's fast path: while Redis runs one batch the caller plans the next
    (Python on one core, Redis on another). A single sender thread runs the batches one
    after the other, so replies come back in order. A batch's calls are grouped by the
    node that holds their slot (one group on a single Redis), packed by hiredis in one
    go (a call carries ~30 arguments per postback, which a redis-py pipeline would check
    and encode one by one) and written on a connection borrowed from that node's pool,
    their replies read back with ``read_response``: public methods only, the same on
    both kinds of Redis. A call answered NOSCRIPT, MOVED, ASK or TRYAGAIN ran nothing and
    goes again through :meth:`Scripts.run_many` (which loads the script, or lets the
    cluster client follow the redirect).
    """

    def __init__(self, scripts: Scripts, client, name: str) -> None:
        self.scripts, self.client, self.name = scripts, client, name
        self._sender: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._inflight: deque[Future] = deque()

    def send(self, calls: list[Call]) -> None:
        """Start ``calls`` (keys, args pairs) without waiting for their replies."""
        with self._lock:
            if self._sender is None:
                self._sender = ThreadPoolExecutor(1, thread_name_prefix=f"lua-{self.name}")
            sender = self._sender
        self._inflight.append(sender.submit(self._run, list(calls)))

    def receive(self) -> list:
        """The oldest batch's replies (each a value or an exception); [] when none is out.

        A lost connection raises here, and every batch still in flight is forgotten:
        whether it ran is unknown, so the caller reads its entries again.
        """
        if not self._inflight:
            return []
        future = self._inflight.popleft()
        try:
            return future.result()
        except BaseException:
            self.reset()
            raise

    def _run(self, calls: list[Call]) -> list:
        return _raise_lost(self.scripts.run_packed(self.client, self.name, calls))

    def pending(self) -> int:
        return len(self._inflight)

    def reset(self) -> None:
        """Forget every batch in flight (waiting for those already running to end)."""
        inflight, self._inflight = list(self._inflight), deque()
        for future in inflight:
            future.cancel()
        for future in inflight:
            if not future.cancelled():
                future.exception()  # waits; the outcome is forgotten on purpose

    def close(self) -> None:
        self.reset()
        with self._lock:
            sender, self._sender = self._sender, None
        if sender is not None:
            sender.shutdown(wait=True)


def _send_packed(client, commands: list[tuple], routing: list) -> list:
    """``commands`` packed by hiredis and written per node in one go, to every node before
    any reply is read, then each node's replies read back in order with
    ``read_response``. ``routing`` holds, per command, the key whose node it goes to (or
    the command itself: its key is [1]).

    Per command its reply or its error: an error reply as a ``ResponseError``; for the
    commands of a node that could not be reached, :class:`NotSent`; for those of a node
    whose connection was lost or timed out after sending, that error (``LOST``; the
    connection is dropped, as its replies are left unread).
    """
    by_pool: dict[int, tuple[object, list[int]]] = {}
    cluster = isinstance(client, RedisCluster)
    for i, route in enumerate(routing):
        if cluster:
            key = route[1] if isinstance(route, tuple) else route
            pool = client.get_node_from_key(key).redis_connection.connection_pool
        else:
            pool = client.connection_pool
        by_pool.setdefault(id(pool), (pool, []))[1].append(i)
    results: list = [None] * len(commands)
    sent: list[tuple[object, object, list[int]]] = []
    unread = set()  # connections written to whose replies are not all read
    try:
        for pool, indices in by_pool.values():
            try:
                conn = pool.get_connection()
            except LOST as exc:
                for i in indices:
                    results[i] = NotSent(str(exc))
                continue
            sent.append((pool, conn, indices))
            unread.add(id(conn))
            try:
                conn.send_packed_command([b"".join(pack_command(commands[i]) for i in indices)])
            except LOST as exc:
                _lost(conn, indices, 0, results, exc)
                unread.discard(id(conn))
        for _, conn, indices in sent:
            if id(conn) not in unread:
                continue
            for done, i in enumerate(indices):
                try:
                    results[i] = conn.read_response()
                except ResponseError as exc:
                    results[i] = exc
                except LOST as exc:
                    _lost(conn, indices, done, results, exc)
                    break
            unread.discard(id(conn))
    finally:
        for pool, conn, _ in sent:
            if id(conn) in unread:
                conn.disconnect()  # replies left unread: the connection cannot be reused
            pool.release(conn)
    return results


def _lost(conn, indices: list[int], done: int, results: list, exc: Exception) -> None:
    conn.disconnect()
    for i in indices[done:]:
        results[i] = exc


def _ran_nothing(result) -> bool:
    if isinstance(result, NotSent | NoScriptError):
        return True
    return isinstance(result, ResponseError) and str(result).startswith(_RAN_NOTHING)


def _raise_lost(results: list) -> list:
    """``results`` unchanged, unless a node's connection failed: then its error is raised
    (the matcher's paths read their entries again when a batch's outcome is unknown)."""
    for result in results:
        if isinstance(result, LOST):
            raise result
    return results


_default: Scripts | None = None


def default_scripts() -> Scripts:
    """The process-wide registry (files are read once)."""
    global _default
    if _default is None:
        _default = Scripts()
    return _default
