"""``postback forwarder [--consumer NAME] [--concurrency N]``: run one forwarder worker.

Any number run side by side, on any machines: each reads every partition through the
``forwarder`` consumer group. Give each a stable ``--consumer`` name (e.g. the dyno or
pod name) so a restart resumes its own pending jobs at once; without one the name is
``<host>-<pid>`` and a dead process's jobs are claimed by the others after
``POSTBACK_CLAIM_IDLE_MS``. SIGTERM or SIGINT finish the deliveries in hand, exit 0.
"""

from __future__ import annotations

import argparse
import logging
import signal

from core.config import Settings
from processors.forwarder import Forwarder, default_consumer_name
from storage.redis_client import ensure_groups, worker_connection

log = logging.getLogger("postback.forwarder")


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--consumer",
        default=None,
        help="consumer name in the forwarder group (default <host>-<pid>); keep it stable "
        "across restarts so this worker resumes its own pending jobs",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=None,
        help="deliveries in flight at once (default POSTBACK_FORWARD_CONCURRENCY, "
        f"{Settings.forward_concurrency})",
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    client = worker_connection(settings)
    client.ping()  # unreachable at start: the command says so and exits non-zero
    forwarder = Forwarder(
        settings,
        client,
        consumer=args.consumer or default_consumer_name(),
        concurrency=args.concurrency,
    )
    ensure_groups(client, forwarder.keys)

    def on_signal(signum, _frame) -> None:
        log.info("%s: finishing the deliveries in hand", signal.Signals(signum).name)
        forwarder.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "forwarder %s started: %d partition(s), concurrency %d, %d per partner",
        forwarder.consumer,
        settings.partitions,
        forwarder.concurrency,
        settings.partner_max_inflight,
    )
    try:
        forwarder.run()
    finally:
        forwarder.close()
    log.info("forwarder %s stopped", forwarder.consumer)
    return 0
