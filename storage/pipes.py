"""Raw pipelines for hot paths: commands packed by hiredis, sent now, replies read later.

>>> pipe = ScriptPipe(client, default_scripts(), "match")
>>> pipe.send([(keys, args), ...])   # EVALSHA calls; nothing is waited for
>>> pipe.receive()                   # the oldest batch's replies, in order
"""

from __future__ import annotations

from collections import deque

import redis
from redis.connection import AbstractConnection
from redis.exceptions import NoScriptError

from storage.scripts import Scripts

_READ_RESPONSE = AbstractConnection.read_response

try:
    from hiredis import pack_command as _pack
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _MORE
except ImportError:  # pragma: no cover - hiredis is a dependency (redis[hiredis])
    _pack = _MORE = None


class RawPipe:
    """Batches of commands written in one go, their replies read later, in order.

    The hot path sends about 30 arguments per postback; redis-py's per-argument checks
    cost more than the planning itself, so commands are packed by hiredis directly.
    Writing and reading apart lets Redis run one batch while Python plans the next and
    reads the previous one's replies (Python on one core, Redis on the other). Batches
    in flight share one pooled connection, so their replies come back in order.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._conn = None
        self._counts: deque[int] = deque()

    def send(self, commands: list) -> None:
        """Write ``commands`` (argument tuples) without waiting for their replies."""
        if self._conn is None:
            self._conn = self.client.connection_pool.get_connection()
        conn = self._conn
        try:
            if _pack is None:
                conn.send_packed_command(conn.pack_commands(commands))
            else:
                conn.send_packed_command([b"".join(map(_pack, commands))])
        except BaseException:
            self.reset()
            raise
        self._counts.append(len(commands))

    def receive(self) -> list:
        """The oldest batch's replies (each a value or ResponseError); [] when none is out."""
        if not self._counts:
            return []
        conn, count = self._conn, self._counts.popleft()
        try:
            replies = _read_replies(conn, count)
        except BaseException:
            self.reset()  # replies left unread: the socket cannot be reused
            raise
        if not self._counts:
            self._release()
        return replies

    def execute(self, commands: list) -> list:
        """Send and wait (nothing else may be in flight); raise the first error reply."""
        self.send(commands)
        replies = self.receive()
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def reset(self) -> None:
        """Forget every batch in flight and drop the connection (its replies are lost)."""
        self._counts.clear()
        if self._conn is not None:
            self._conn.disconnect()
            self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        self.client.connection_pool.release(conn)


def _read_replies(conn, count: int) -> list:
    """``count`` replies from ``conn``, error replies as ResponseError values.

    With hiredis the replies are taken from its reader directly: redis-py's
    ``read_response`` costs more per reply than parsing it (500 click reads a batch).
    """
    parser = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    # Only a stock connection: others (fakeredis) read their replies their own way.
    if reader is None or _MORE is None or type(conn).read_response is not _READ_RESPONSE:
        replies: list = []
        for _ in range(count):
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
        return replies
    gets, more = reader.gets, parser.read_from_socket
    replies = [None] * count
    try:
        for i in range(count):
            reply = gets()
            while reply is _MORE:
                more()
                reply = gets()
            if isinstance(reply, redis.ConnectionError):
                raise reply  # e.g. LOADING: as read_response would
            replies[i] = reply
    except OSError as exc:  # read_response's translation of socket errors
        raise redis.ConnectionError(f"Error while reading from Redis: {exc}") from exc
    return replies


class ScriptPipe(RawPipe):
    """EVALSHA calls of one script through a :class:`RawPipe`.

    A call that meets NOSCRIPT (Redis restarted) ran nothing and goes again through
    ``Scripts.run_many``, which loads the script first.
    """

    def __init__(self, client: redis.Redis, scripts: Scripts, name: str) -> None:
        super().__init__(client)
        self.scripts, self.name = scripts, name
        self.sha = scripts.sha(name)
        self._calls: deque[list] = deque()

    def send(self, calls: list) -> None:  # type: ignore[override]
        """Write ``calls``, (keys, args) pairs."""
        sha = self.sha
        super().send([("EVALSHA", sha, len(k), *k, *a) for k, a in calls])
        self._calls.append(calls)

    def receive(self) -> list:
        if not self._calls:
            return []
        calls = self._calls.popleft()
        replies = super().receive()
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            again = self.scripts.run_many(self.client, self.name, [calls[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    def reset(self) -> None:
        self._calls.clear()
        super().reset()
