"""``postback edge [--host H] [--port P] [--threads N] [--workers N]``: serve the edge.

One waitress process, or with ``--workers N`` (``POSTBACK_EDGE_WORKERS``; ``auto`` is one
per CPU) N of them sharing the port under a supervising parent (``edge.workers``).
SIGTERM and Ctrl-C stop accepting, let the requests in hand finish, and exit 0.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import socket
import sys

import waitress

from core.config import ConfigError, Settings, usable_cpus, workers
from core.numbers import as_argument
from core.postback import MAX_BATCH_BODY
from core.validation import ValidationError
from edge import workers as edge_workers
from edge.app import create_app

log = logging.getLogger("postback.edge")

#: SPEC §8: a shorter admin token is refused at start (it could be guessed).
MIN_ADMIN_TOKEN = 16


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default $HOST or 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (default $PORT or 8080)")
    parser.add_argument(
        "--threads", type=int, help="waitress threads per process (default $POSTBACK_THREADS or 8)"
    )
    parser.add_argument(
        "--workers",
        type=workers_argument,
        help="processes sharing the port, or auto for one per CPU "
        "(default $POSTBACK_EDGE_WORKERS or 1)",
    )
    # A supervised worker (edge.workers) serves the listening socket it inherited.
    parser.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)


#: ``--workers``: a count, or auto.
workers_argument = as_argument(workers)


def _stop(signum, frame) -> None:
    # waitress's loop ends on KeyboardInterrupt and waits for the tasks in hand.
    raise KeyboardInterrupt


def run(settings: Settings, args: argparse.Namespace) -> int:
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    threads = settings.threads if args.threads is None else args.threads
    count = settings.edge_workers if args.workers is None else args.workers
    count = 1 if count is None else count or usable_cpus()
    if not 0 < port < 65536:
        raise ValidationError("port", "must be a port number from 1 to 65535")
    if threads < 1:
        raise ValidationError("threads", "must be at least 1")
    if settings.admin_token is not None and len(settings.admin_token) < MIN_ADMIN_TOKEN:
        raise ConfigError(
            f"POSTBACK_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN} characters "
            f"(it has {len(settings.admin_token)}); unset it to turn the admin API off"
        )
    settings = settings.with_overrides(host=host, port=port, threads=threads)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("waitress").setLevel(logging.WARNING)  # its "Serving on" repeats ours
    # "Task queue depth is N" on every request queued while all threads are busy: under
    # load, a flood of lines costing ~6 % of the edge's CPU (py-spy), telling nothing
    # that /metrics and the request latency do not.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)

    app = create_app(settings)  # in a supervisor too: bad settings stop it here, once
    if args.listen_fd is None and count > 1:
        app.ctx.redis.close()
        return edge_workers.serve(host, port, count, threads, settings.metrics_dir)
    if args.listen_fd is not None:
        where = {"sockets": [socket.socket(fileno=args.listen_fd)]}
    else:
        where = {"host": host, "port": port}
    try:
        server = waitress.create_server(
            app,
            **where,
            threads=threads,
            # A chunked body is buffered by waitress before the app sees it: cap it at the
            # batch limit, the largest body the edge accepts.
            max_request_body_size=MAX_BATCH_BODY,
            ident="postback-relay",
            # Waitress would drop X-Forwarded-For from every peer but its one
            # ``trusted_proxy`` address; the app decides instead, against the list of
            # networks in POSTBACK_TRUSTED_PROXIES (edge.client_ip), and believes the
            # header only from those peers.
            clear_untrusted_proxy_headers=False,
            asyncore_use_poll=True,
        )
    except OSError as exc:
        print(f"postback edge: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _stop)
    # What start-up made (modules, the app, the routes: ~45,000 objects) lives as long as
    # the process; frozen, the collector stops walking it on every full collection (one
    # took ~20 ms of CPU on the 2-core box, and came every ~20 batches of 1,000 items).
    gc.freeze()
    if args.listen_fd is None:
        log.info(
            "postback edge on http://%s:%s (%d threads)",
            host,
            getattr(server, "effective_port", port),
            threads,
        )
    server.run()
    server.close()
    log.info("postback edge stopped")
    return 0
