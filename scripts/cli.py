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
from importlib.metadata import PackageNotFoundError, version

from core.config import ConfigError, Settings
from core.validation import ValidationError
from scripts import dev_state
from storage.redis_client import UNAVAILABLE
from storage.repositories import NotFound

COMMANDS = {
    "edge": ("edge.server", "serve the edge (HTTP) with waitress"),
    "matcher": ("processors.matcher.cli", "run a matcher worker"),
    "forwarder": ("processors.forwarder.cli", "run a forwarder worker"),
    "dev": ("scripts.dev", "run edge, matcher and forwarder together on this machine"),
    "admin": ("scripts.admin", "manage sources, offers, partners, clicks, users, dead letters"),
    "lag": ("scripts.lag", "show stream lag, pending entries, retries and dead letters"),
    "export": ("scripts.export", "export received/forwarded logs or conversions as CSV or JSONL"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse that fails with one line (and exit code 2) instead of a usage dump."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message}\n")


def package_version() -> str:
    try:
        return version("postback-relay")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="postback",
        description=__doc__.splitlines()[0],
        epilog="`postback COMMAND --help` describes a command. Settings come from the "
        "environment (REDIS_URL, POSTBACK_*; see the README).",
    )
    parser.add_argument("--version", action="version", version=f"postback {package_version()}")
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=ArgumentParser, metavar="COMMAND"
    )
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(module=module_name)
        importlib.import_module(module_name).configure(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # bare `postback`: what it can do, not a one-line complaint
        parser.print_help()
        return 2
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.command != "dev":
            settings = dev_state.settings_for_second_terminal(settings)
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
