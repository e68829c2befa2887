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
            assert name.startswith(allowed), (module_name(path), name)


BACKENDS = ("memory", "sqlite", "postgres", "kurrentdb")


def backend_of(module: str) -> str | None:
    """The backend an ``epoch.stores`` module belongs to: its subpackage (``epoch.stores.postgres.pool``),
    its module (``epoch.stores.memory``) or a flat private module's prefix (``epoch.stores._sqlite_work``)."""
    if not module.startswith("epoch.stores."):
        return None
    head = module.removeprefix("epoch.stores.").split(".")[0].lstrip("_").split("_")[0]
    return head if head in BACKENDS else None


def imported_modules(path: Path) -> set[str]:
    """What ``path`` imports, with ``from epoch.stores import x`` read as ``epoch.stores.x`` as well."""
    found = imports_of(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "epoch":
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_backend_of_reads_subpackages_and_flat_modules() -> None:
    assert backend_of("epoch.stores.postgres.pool") == "postgres"
    assert backend_of("epoch.stores.postgres") == "postgres"
    assert backend_of("epoch.stores._sqlite_work") == "sqlite"
    assert backend_of("epoch.stores.kurrentdb.mapping") == "kurrentdb"
    assert backend_of("epoch.stores.memory") == "memory"
    assert backend_of("epoch.stores._checks") is None
    assert backend_of("epoch.stores") is None
    assert backend_of("epoch.projections.scaleout") is None


def test_backends_never_import_each_other() -> None:
    # Only open_store (epoch.stores) imports several backends, each lazily from its URL scheme.
    paths = list((SRC / "stores").rglob("*.py"))
    assert {"epoch.stores.postgres", "epoch.stores.postgres.pool"} <= {module_name(p) for p in paths}
    for path in paths:
        own = backend_of(module_name(path))
        for name in imported_modules(path):
            other = backend_of(name)
            if other is not None and other != own:
                assert module_name(path) == "epoch.stores", (module_name(path), name)


def test_cli_and_web_use_the_public_api() -> None:
    internal = ("epoch.stores._", "epoch.commands", "epoch.cache", "epoch.projections._")
    for path in [*(SRC / "cli").glob("*.py"), *(SRC / "web").glob("*.py")]:
        for name in imports_of(path):
            assert not name.startswith(internal), (path.name, name)


def test_the_api_page_names_every_public_name() -> None:
    page = (ROOT / "docs" / "api.md").read_text()
    missing = [name for name in epoch.__all__ if name != "__version__" and f"`{name}`" not in page]
    assert missing == []
