"""The ``postback`` command itself: usage, version, settings it refuses."""

from __future__ import annotations

import os
import subprocess
import sys


def postback(*argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scripts.cli", *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bare_postback_prints_its_usage_with_every_command():
    done = postback()
    assert done.returncode == 2
    for command in ("edge", "matcher", "forwarder", "dev", "admin", "lag", "export"):
        assert command in done.stdout
    assert "--version" in done.stdout


def test_version_names_the_package_version():
    from importlib.metadata import version

    done = postback("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"postback {version('postback-relay')}"


def test_a_bad_setting_is_one_line_naming_the_variable():
    done = postback("lag", POSTBACK_PARTITIONS="abc")
    assert done.returncode == 1
    assert done.stderr == (
        "postback: bad configuration: POSTBACK_PARTITIONS='abc': must be a positive whole number\n"
    )
