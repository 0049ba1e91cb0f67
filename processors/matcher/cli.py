"""``postback matcher [--consumer NAME]``: run one matcher worker.

Any number run side by side, on any machines: each serves every partition through the
``matcher`` consumer group. A stable ``--consumer`` name (the dyno or pod name) lets a
restarted worker resume its own pending entries at once; without one the name is
``<host>-<pid>`` and a dead process's entries are claimed by the others after
``POSTBACK_CLAIM_IDLE_MS``. SIGTERM or SIGINT finish the batch in hand, then exit 0.
"""

from __future__ import annotations

import argparse
import logging

from core.config import Settings
from processors.consumer import default_consumer
from processors.matcher.worker import MatcherWorker
from storage.redis_client import worker_connection


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--consumer",
        default=None,
        help="consumer name in the matcher group (default <host>-<pid>); keep it stable "
        "across restarts so this worker resumes its own pending entries",
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    client = worker_connection(settings)
    client.ping()  # unreachable at start: the command says so and exits non-zero
    worker = MatcherWorker(settings, consumer=args.consumer or default_consumer(), client=client)
    return worker.run()
