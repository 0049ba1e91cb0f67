"""How a second terminal finds the Redis that ``postback dev`` is using.

``postback dev`` may start its own Redis on a random port. While it runs it writes that
Redis's URL (and the namespace and partition count it runs with) to one file in the
user's state directory, ``$XDG_STATE_HOME/postback-relay/dev.json`` (default
``~/.local/state/postback-relay/dev.json``; ``$POSTBACK_STATE_DIR/dev.json`` when that
is set), and removes the file when it stops.

Every other ``postback`` command, when ``REDIS_URL`` is not set, uses that file — only
while the ``postback dev`` that wrote it is alive and its Redis answers — so the README's
commands in another terminal read and write the same data as the running system. A
setting given in the environment always wins over the file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

import orjson

from core.config import Settings
from scripts.embedded_redis import answers


def state_file(env: Mapping[str, str] | None = None) -> Path:
    """``$POSTBACK_STATE_DIR/dev.json`` if set, else under ``$XDG_STATE_HOME`` or ~/.local/state."""
    env = os.environ if env is None else env
    if env.get("POSTBACK_STATE_DIR"):
        return Path(env["POSTBACK_STATE_DIR"]) / "dev.json"
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "postback-relay" / "dev.json"


def publish(settings: Settings, kind: str) -> Path:
    """Write the file for this ``postback dev`` process; returns where it is."""
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "pid": os.getpid(),
        "redis_url": settings.redis_url,
        "kind": kind,
        "namespace": settings.namespace,
        "partitions": settings.partitions,
    }
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(record))
    tmp.replace(path)
    return path


def withdraw() -> None:
    """Remove the file if this process wrote it (a newer ``postback dev`` may own it)."""
    path = state_file()
    record = _read(path)
    if record and record.get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def settings_for_second_terminal(
    settings: Settings, env: Mapping[str, str] | None = None
) -> Settings:
    """``settings`` pointed at the running ``postback dev``'s Redis when REDIS_URL is unset."""
    env = os.environ if env is None else env
    if (env.get("REDIS_URL") or "").strip():
        return settings
    record = _read(state_file(env))
    if not record or not _alive(record.get("pid")) or not answers(str(record["redis_url"])):
        return settings
    changes: dict[str, object] = {"redis_url": str(record["redis_url"])}
    if not (env.get("POSTBACK_NAMESPACE") or "").strip():
        changes["namespace"] = str(record["namespace"])
    if not (env.get("POSTBACK_PARTITIONS") or "").strip():
        changes["partitions"] = int(record["partitions"])
    return settings.with_overrides(**changes)


def _read(path: Path) -> dict | None:
    try:
        record = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(record, dict) or not {"pid", "redis_url", "namespace", "partitions"} <= set(
        record
    ):
        return None
    return record


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
