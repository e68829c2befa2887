"""The public surface and the layering: ``epoch.__all__`` matches tests/public_api.txt, and modules only
import in the allowed direction (STYLE §3)."""

from __future__ import annotations

import ast
import inspect
import os
from pathlib import Path

import epoch

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "epoch"
SNAPSHOT = ROOT / "tests" / "public_api.txt"


def describe(name: str) -> str:
    value = getattr(epoch, name)
    if inspect.isclass(value):
        try:
            return f"class {name}{inspect.signature(value)}"
        except (TypeError, ValueError):
            return f"class {name}"
    if callable(value):
        return f"def {name}{inspect.signature(value)}"
    return f"{name} = {value!r}"


def test_all_is_sorted_and_complete() -> None:
    assert list(epoch.__all__) == sorted(epoch.__all__)
    for name in epoch.__all__:
        assert hasattr(epoch, name), name


def test_public_api_snapshot() -> None:
    """Changing the public API is a reviewed change: run with EPOCH_UPDATE_API=1 to rewrite the snapshot."""
    current = "\n".join(describe(name) for name in epoch.__all__ if name != "__version__") + "\n"
    if os.environ.get("EPOCH_UPDATE_API") == "1":
        SNAPSHOT.write_text(current)
    assert SNAPSHOT.read_text() == current


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "epoch"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_domain_is_pure() -> None:
    for path in (SRC / "domain").glob("*.py"):
        for name in imports_of(path):
            assert name.startswith(("epoch.domain", "epoch.records", "epoch.errors")), (path.name, name)
        text = path.read_text()
        for forbidden in ("import asyncio", "import random", "datetime.now", "import sqlite3"):
            assert forbidden not in text, (path.name, forbidden)


def test_codec_and_stores_depend_only_on_records_and_errors() -> None:
    # streams: the name rules; _roundtrip: the codec's own field walk; _backoff: the retry delays (stdlib only)
    allowed = ("epoch.records", "epoch.errors", "epoch.streams", "epoch.stores", "epoch._roundtrip", "epoch._backoff")
    for path in [SRC / "codec.py", *(SRC / "stores").rglob("*.py")]:  # the backends' subpackages too
        for name in imports_of(path):
            assert name.startswith(allowed), (path.name, name)


BACKENDS = {"memory", "sqlite", "postgres", "kurrentdb"}
STORES = SRC / "stores"


def backend_of_path(path: Path) -> str | None:
    """The backend a module of ``stores/`` belongs to: its subpackage (``stores/kurrentdb/errors.py``), or
    for a flat module the first word of its name (``_postgres_pool.py``, ``memory.py``); None for shared ones."""
    parts = path.relative_to(STORES).with_suffix("").parts
    word = parts[0] if len(parts) > 1 else parts[0].lstrip("_").split("_")[0]
    return word if word in BACKENDS else None


def backend_of_module(name: str) -> str | None:
    """The backend an imported module belongs to (``epoch.stores.kurrentdb.mapping``: kurrentdb), or None."""
    if not name.startswith("epoch.stores."):
        return None
    word = name.removeprefix("epoch.stores.").split(".")[0].lstrip("_").split("_")[0]
    return word if word in BACKENDS else None


def imported_modules(path: Path) -> set[str]:
    """:func:`imports_of`, plus ``package.name`` for each ``from package import name`` (a module, maybe)."""
    found = imports_of(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "epoch":
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_rules_know_where_each_store_module_belongs() -> None:
    assert backend_of_path(STORES / "kurrentdb" / "errors.py") == "kurrentdb"
    assert backend_of_path(STORES / "kurrentdb" / "__init__.py") == "kurrentdb"
    assert backend_of_path(STORES / "_postgres_pool.py") == "postgres"
    assert backend_of_path(STORES / "memory.py") == "memory"
    assert backend_of_path(STORES / "_checks.py") is None
    assert backend_of_path(STORES / "copy.py") is None
    assert backend_of_module("epoch.stores.kurrentdb.mapping") == "kurrentdb"
    assert backend_of_module("epoch.stores._sqlite_work") == "sqlite"
    assert backend_of_module("epoch.stores.memory") == "memory"
    assert backend_of_module("epoch.stores._checks") is None
    assert backend_of_module("epoch.kurrentdb") is None


def test_backends_never_import_each_other() -> None:
    """A backend (its subpackage or flat modules) imports no other backend; only the shared modules that
    open or copy any store (``stores/__init__.py``, ``copy.py``) may name them."""
    checked = 0
    for path in STORES.rglob("*.py"):
        own = backend_of_path(path)
        for name in imported_modules(path):
            other = backend_of_module(name)
            if other is not None and other != own:
                assert path.relative_to(STORES).as_posix() in ("__init__.py", "copy.py"), (path, name)
        checked += own is not None
    assert checked >= len(BACKENDS)  # the walk saw every backend's modules (the glob is not silently empty)


def test_backend_internals_stay_inside_their_backend() -> None:
    """``epoch.stores.sqlite.work`` and the like are imported only from their own subpackage, anywhere in
    ``src/epoch`` (everything else uses the package, ``epoch.stores.sqlite``)."""
    for path in SRC.rglob("*.py"):
        inside = backend_of_path(path) if path.is_relative_to(STORES) else None
        for name in imported_modules(path):
            parts = name.split(".")
            if len(parts) > 3 and parts[2] in BACKENDS and (STORES / parts[2] / f"{parts[3]}.py").is_file():
                assert inside == parts[2], (str(path.relative_to(SRC)), name)


def test_cli_and_web_use_the_public_api() -> None:
    internal = ("epoch.stores._", "epoch.commands", "epoch.cache", "epoch.projections._")
    for path in [*(SRC / "cli").glob("*.py"), *(SRC / "web").glob("*.py")]:
        for name in imports_of(path):
            assert not name.startswith(internal), (path.name, name)


def test_the_api_page_names_every_public_name() -> None:
    page = (ROOT / "docs" / "api.md").read_text()
    missing = [name for name in epoch.__all__ if name != "__version__" and f"`{name}`" not in page]
    assert missing == []
