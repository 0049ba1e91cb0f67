"""core/ is plain values and rules: no network, no Redis, no HTTP library, no storage.

Scans the import statements of every module under core/ (lazy imports inside
functions included), and imports each module to be sure the scan saw real code.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "core"
MODULES = sorted(p for p in CORE.rglob("*.py"))

#: Top-level packages core must never import (I/O, or layers above it).
FORBIDDEN = {
    "socket",
    "ssl",
    "http",
    "urllib3",
    "requests",
    "falcon",
    "waitress",
    "redis",
    "storage",
    "edge",
    "processors",
    "scripts",
}


def imported_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
        ):
            names.add("<dynamic import>")
    return names


def test_core_has_modules_to_check():
    assert len(MODULES) > 5


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(CORE.parent)))
def test_a_core_module_imports_nothing_that_does_io(path):
    bad = sorted(
        name
        for name in imported_names(path)
        if name == "<dynamic import>" or name.split(".")[0] in FORBIDDEN
    )
    assert bad == [], f"{path.name} imports {bad}"
    module = ".".join(path.relative_to(CORE.parent).with_suffix("").parts)
    importlib.import_module(module.removesuffix(".__init__"))


def test_the_scan_sees_a_forbidden_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nfrom requests.utils import requote_uri\n"
        "def f():\n    import socket\n    from storage.keys import Keys\n"
    )
    assert imported_names(sample) >= {"requests.utils", "socket", "storage.keys"}
