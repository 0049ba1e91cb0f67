"""``postback forwarder [--consumer NAME] [--concurrency N] [--cpu N]``: run one forwarder.

Any number run side by side, on any machines: each reads every partition through the
``forwarder`` consumer group. Give each a stable ``--consumer`` name (e.g. the dyno or
pod name) so a restart resumes its own pending jobs at once; without one the name is
``<host>-<pid>`` and a dead process's jobs are claimed by the others after
``POSTBACK_CLAIM_IDLE_MS``. SIGTERM or SIGINT finish the deliveries in hand, exit 0.

``--cpu N`` (Linux) runs the worker on CPU N only. A forwarder is held to one core by
Python's GIL, so a second CPU gives it nothing; but its delivery threads then hand the
GIL to each other across CPUs, which costs futex calls and cold caches at every
hand-over: pinned, a forwarder spent ~40 % less CPU per delivery to a fast partner in
the bench. Give each forwarder on a machine its own CPU, leaving one for Redis.
"""

from __future__ import annotations

import argparse
import logging
import os

from core.config import Settings
from core.numbers import as_argument, whole_number
from processors.consumer import default_consumer
from processors.forwarder.worker import Forwarder
from storage.redis_client import worker_connection

log = logging.getLogger("postback.forwarder")


def cpu_number(raw: str) -> int:
    try:
        cpu = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a CPU number") from None
    if not hasattr(os, "sched_setaffinity"):
        raise argparse.ArgumentTypeError("this system cannot pin a process to a CPU")
    allowed = sorted(os.sched_getaffinity(0))
    if cpu not in allowed:
        raise argparse.ArgumentTypeError(
            f"CPU {cpu} is not one this process may use ({', '.join(map(str, allowed))})"
        )
    return cpu


def pin_to_cpu(cpu: int) -> None:
    """Run the calling thread, and every thread it starts from now on, on ``cpu`` only.

    Call it before the :class:`Forwarder` starts its delivery threads: they inherit it.
    """
    os.sched_setaffinity(0, {cpu})


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--consumer",
        default=None,
        help="consumer name in the forwarder group (default <host>-<pid>); keep it stable "
        "across restarts so this worker resumes its own pending jobs",
    )
    parser.add_argument(
        "--concurrency",
        type=as_argument(whole_number),
        default=None,
        help="deliveries in flight at once (default POSTBACK_FORWARD_CONCURRENCY, "
        f"{Settings.forward_concurrency})",
    )
    parser.add_argument(
        "--cpu",
        type=cpu_number,
        default=None,
        help="run on this CPU only (Linux): the GIL holds a forwarder to one core anyway, "
        "and pinned its threads hand the GIL over far more cheaply; one CPU per forwarder",
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.cpu is not None:
        pin_to_cpu(args.cpu)
    client = worker_connection(settings)
    client.ping()  # unreachable at start: the command says so and exits non-zero
    forwarder = Forwarder(
        settings,
        client,
        consumer=args.consumer or default_consumer(),
        concurrency=args.concurrency,
    )
    log.info(
        "forwarder %s started: %d partition(s), concurrency %d, %d per partner%s",
        forwarder.consumer,
        settings.partitions,
        forwarder.concurrency,
        settings.partner_max_inflight,
        "" if args.cpu is None else f", on CPU {args.cpu}",
    )
    try:
        code = forwarder.run()  # SIGTERM/SIGINT: the deliveries in hand finish (processors.loop)
    finally:
        forwarder.close()
    log.info("forwarder %s stopped", forwarder.consumer)
    return code
