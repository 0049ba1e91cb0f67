"""postback: take postbacks in, match them, credit points, forward them; one command for all.

Each subcommand lives in its own module exposing ``configure(parser)`` and
``run(settings, args) -> int``; this file only wires them up, builds the settings once
and turns the expected failures (bad configuration, Redis unreachable, bad arguments)
into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from core.config import ConfigError, Settings
from core.entities import ValidationError
from storage.redis_client import UNAVAILABLE
from storage.repositories import NotFound

COMMANDS = {
    "edge": ("edge.server", "serve the edge (HTTP) with waitress"),
    "matcher": ("processors.matcher_cli", "run a matcher worker"),
    "forwarder": ("processors.forwarder_cli", "run a forwarder worker"),
    "dev": ("scripts.dev", "run edge, matcher and forwarder together on this machine"),
    "admin": ("scripts.admin", "manage sources, offers, partners, clicks, users, dead letters"),
    "lag": ("scripts.lag", "show stream lag, pending entries, retries and dead letters"),
    "export": ("scripts.export", "export received/forwarded logs or conversions as CSV or JSONL"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse that fails with one line (and exit code 2) instead of a usage dump."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="postback", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(module=module_name)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            command.set_defaults(missing=True)
            continue
        module.configure(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "missing", False):
        print(f"postback {args.command}: not built yet", file=sys.stderr)
        return 1
    try:
        settings = Settings.from_env()
        return int(importlib.import_module(args.module).run(settings, args) or 0)
    except ConfigError as exc:
        print(f"postback: bad configuration: {exc}", file=sys.stderr)
    except (ValidationError, NotFound) as exc:
        print(f"postback {args.command}: {exc}", file=sys.stderr)
    except UNAVAILABLE as exc:
        print(f"postback {args.command}: Redis unreachable: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
