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
    for path in [SRC / "codec.py", *(SRC / "stores").rglob("*.py")]:
        for name in imports_of(path):
            assert name.startswith(allowed), (path.name, name)


BACKENDS = {"memory", "sqlite", "postgres", "kurrentdb"}
STORES = SRC / "stores"


def store_imports(path: Path) -> set[str]:
    """The epoch modules ``path`` imports, with ``from epoch.stores.sqlite import work`` read as the module
    ``epoch.stores.sqlite.work`` (a name imported from a package is a module when its file exists)."""
    found = imports_of(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("epoch.stores"):
            for alias in node.names:
                module = SRC.parent.joinpath(*node.module.split("."), alias.name)
                if module.with_suffix(".py").is_file() or module.is_dir():
                    found.add(f"{node.module}.{alias.name}")
    return found


def backend_of_module(name: str) -> str | None:
    """The backend a store module belongs to: ``epoch.stores.sqlite.work`` and ``epoch.stores._postgres_pool``
    (the flat layout) alike; ``None`` for the shared modules (``epoch.stores``, ``_checks``, ``_sql`` ...)."""
    if not name.startswith("epoch.stores."):
        return None
    head = name.removeprefix("epoch.stores.").split(".")[0].lstrip("_").split("_")[0]
    return head if head in BACKENDS else None


def backend_of_path(path: Path) -> str | None:
    """The backend a file under ``stores/`` belongs to: its subpackage, or its flat module's name."""
    relative = path.relative_to(STORES)
    if len(relative.parts) > 1:
        return relative.parts[0]
    return backend_of_module(f"epoch.stores.{path.stem}")


def test_backends_never_import_each_other() -> None:
    shared = {STORES / "__init__.py", STORES / "copy.py"}  # open_store and epoch copy name every backend
    for path in STORES.rglob("*.py"):
        own = backend_of_path(path)
        for name in store_imports(path):
            other = backend_of_module(name)
            if other is not None and other != own:
                assert path in shared, (str(path.relative_to(STORES)), name)


def test_backend_internals_stay_inside_their_backend() -> None:
    """``epoch.stores.sqlite.work`` and the like are imported only from their own subpackage."""
    for path in SRC.rglob("*.py"):
        inside = backend_of_path(path) if path.is_relative_to(STORES) else None
        for name in store_imports(path):
            parts = name.split(".")
            if len(parts) > 3 and parts[2] in BACKENDS and (STORES / parts[2]).is_dir():
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
