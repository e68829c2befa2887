"""The public surface and the layering (docs/architecture.md): ``epoch.__all__`` and the members of the main
classes match tests/public_api.txt, and modules only import in the allowed direction (STYLE §3).

The rules hold for the flat store layout (``stores/_sqlite_work.py``) and for one subpackage per backend
(``stores/sqlite/work.py``) alike."""

from __future__ import annotations

import ast
import inspect
import os
from pathlib import Path

import epoch

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "epoch"
SNAPSHOT = ROOT / "tests" / "public_api.txt"

# The classes whose public members are pinned too, not only their constructors.
MEMBERS_PINNED = ("Codec", "CommandHandler", "DecisionHandler", "EventStore", "ProjectionRunner")

# What may import what: a module imports only modules of its own layer or of a lower one. A unit is a
# top-level module or package of epoch ("epoch" itself is the package's __init__, the public API).
LAYERS = {
    "errors": 0,
    "records": 0,
    "_roundtrip": 0,
    "_backoff": 0,
    "_payload": 0,
    "streams": 1,
    "queries": 1,
    "_tags": 1,
    "domain": 1,
    "codec": 2,
    "personal": 2,
    "stores": 2,
    "cache": 3,
    "_idempotency": 3,
    "_lanes": 3,
    "_run": 3,
    "_forget": 3,
    "_results": 3,
    "commands": 3,
    "snapshots": 3,
    "decisions": 3,
    "telemetry": 3,
    "epoch": 4,
    "projections": 4,
    "testing": 5,
    "examples": 5,
    "forwarding": 5,
    "http": 5,
    "_apps": 5,
    "web": 6,
    "cli": 7,
}

# The only store modules a module outside epoch/stores may import: the seam and the stores themselves.
PUBLIC_STORE_MODULES = {
    "epoch.stores",
    "epoch.stores.memory",
    "epoch.stores.copy",
    "epoch.stores.sqlite",
    "epoch.stores.postgres",
    "epoch.stores.kurrentdb",
}
BACKENDS = ("memory", "sqlite", "postgres", "kurrentdb")
MAX_LINES = 400


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


def describe_members(name: str) -> list[str]:
    """One line per public member (and async context manager method) the class defines or inherits from
    epoch's own classes, not from object or typing."""
    cls = getattr(epoch, name)
    lines = []
    for member in sorted(dir(cls)):
        if member.startswith("_") and member not in ("__aenter__", "__aexit__"):
            continue
        owner = next(klass for klass in cls.__mro__ if member in vars(klass))
        if not owner.__module__.startswith("epoch"):
            continue
        value = vars(owner)[member]
        if isinstance(value, property):
            lines.append(f"  {name}.{member}: property")
        elif isinstance(value, staticmethod | classmethod) or inspect.isfunction(value):
            function = value.__func__ if isinstance(value, staticmethod | classmethod) else value
            kind = (
                "async def" if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function) else "def"
            )
            lines.append(f"  {kind} {name}.{member}{inspect.signature(function)}")
        else:
            lines.append(f"  {name}.{member}: attribute")
    return lines


def public_api() -> str:
    lines = []
    for name in epoch.__all__:
        if name != "__version__":
            lines.append(describe(name))
            if name in MEMBERS_PINNED:
                lines.extend(describe_members(name))
    return "\n".join(lines) + "\n"


def test_all_is_sorted_and_complete() -> None:
    assert list(epoch.__all__) == sorted(epoch.__all__)
    for name in epoch.__all__:
        assert hasattr(epoch, name), name


def test_public_api_snapshot() -> None:
    """Changing the public API is a reviewed change: run with EPOCH_UPDATE_API=1 to rewrite the snapshot."""
    current = public_api()
    if os.environ.get("EPOCH_UPDATE_API") == "1":
        SNAPSHOT.write_text(current)
    assert SNAPSHOT.read_text() == current


def test_the_snapshot_pins_members() -> None:
    snapshot = SNAPSHOT.read_text().splitlines()
    for name in MEMBERS_PINNED:
        assert any(line.startswith(f"  async def {name}.") or line.startswith(f"  def {name}.") for line in snapshot), (
            name
        )


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    """Whether ``name`` (``epoch.x.y``) is a module or package of src/epoch."""
    base = SRC.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path, module: str | None = None) -> set[str]:
    """Every epoch module ``path`` (the module ``module``, by default the one its place in src/ names)
    imports, anywhere in it. ``from epoch.stores import _checks`` counts as importing
    ``epoch.stores._checks``; relative imports are resolved against the module's package."""
    own = module or module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            submodules = {f"{module}.{alias.name}" for alias in node.names if is_module(f"{module}.{alias.name}")}
            found.update(submodules)
            if len(submodules) < len(node.names):  # some names are the module's own
                found.add(module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "epoch"}


def sources(under: str = "") -> list[Path]:
    return sorted((SRC / under).rglob("*.py"))


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "epoch"


def backend_of(module: str) -> str | None:
    """``sqlite`` for ``epoch.stores.sqlite``, ``epoch.stores.sqlite.work`` or ``epoch.stores._sqlite_work``."""
    if not module.startswith("epoch.stores."):
        return None
    first = module.removeprefix("epoch.stores.").split(".")[0].lstrip("_").split("_")[0]
    return first if first in BACKENDS else None


def test_imports_of_resolves_submodules_and_relative_imports(tmp_path: Path) -> None:
    assert {"epoch.errors", "epoch.records"} <= imports_of(SRC / "stores" / "__init__.py")
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from epoch.stores import _checks, EventStore\nfrom epoch import cli\nimport epoch.web\n"
        "def later():\n    from epoch.stores import memory\n"
    )
    found = imports_of(probe, "epoch.projections.probe")
    assert found == {"epoch.stores", "epoch.stores._checks", "epoch.cli", "epoch.web", "epoch.stores.memory"}
    probe.write_text("from . import _tables\nfrom ..stores import _checks\n")
    assert imports_of(probe, "epoch.projections.probe") == {
        "epoch.projections._tables",
        "epoch.stores._checks",
    }


def test_every_module_is_in_a_layer() -> None:
    units = {unit_of(module_name(path)) for path in sources()}
    assert sorted(units - LAYERS.keys()) == []


def test_modules_import_only_their_own_layer_or_lower() -> None:
    wrong = []
    for path in sources():
        layer = LAYERS[unit_of(module_name(path))]
        for name in imports_of(path):
            if LAYERS[unit_of(name)] > layer:
                wrong.append((module_name(path), name))
    assert wrong == []


def test_only_stores_import_store_internals() -> None:
    """Outside epoch/stores, a store is reached through epoch.stores (the seams) or a store's own module."""
    wrong = []
    for path in sources():
        if module_name(path).startswith("epoch.stores"):
            continue
        for name in imports_of(path):
            if name.startswith("epoch.stores.") and name not in PUBLIC_STORE_MODULES:
                wrong.append((module_name(path), name))
    assert wrong == []


def test_web_never_imports_the_cli() -> None:
    wrong = [(module_name(p), n) for p in sources("web") for n in imports_of(p) if unit_of(n) == "cli"]
    assert wrong == []


def test_no_module_is_over_400_lines() -> None:
    long = {module_name(p): n for p in sources() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_domain_is_pure() -> None:
    for path in sources("domain"):
        for name in imports_of(path):
            assert name.startswith(("epoch.domain", "epoch.records", "epoch.errors")), (path.name, name)
        text = path.read_text()
        for forbidden in ("import asyncio", "import random", "datetime.now", "import sqlite3"):
            assert forbidden not in text, (path.name, forbidden)


def test_codec_and_stores_depend_only_on_records_and_errors() -> None:
    # streams: the name rules; queries: the consistency-boundary queries stores answer; _tags: the codec's tags; _roundtrip: the codec's own field walk; _backoff: the retry delays (stdlib only)
    allowed = (
        "epoch.records",
        "epoch.errors",
        "epoch.streams",
        "epoch.queries",
        "epoch._tags",
        "epoch.stores",
        "epoch._roundtrip",
        "epoch._backoff",
    )
    # personal: the codec seals and opens personal fields (docs/personal-data.md); stores never import it
    codec_allowed = (*allowed, "epoch.personal")
    for path in [SRC / "codec.py", *sources("stores")]:
        for name in imports_of(path):
            assert name.startswith(codec_allowed if path.name == "codec.py" else allowed), (path.name, name)


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


def test_backend_of_reads_both_layouts() -> None:
    assert [backend_of(m) for m in ("epoch.stores._sqlite_work", "epoch.stores.sqlite.work")] == ["sqlite", "sqlite"]
    assert [backend_of(m) for m in ("epoch.stores.postgres", "epoch.stores._sql", "epoch.stores")] == [
        "postgres",
        None,
        None,
    ]


def test_cli_and_web_use_the_public_api() -> None:
    internal = ("epoch.stores._", "epoch.commands", "epoch.cache", "epoch.projections._")
    for path in [*sources("cli"), *sources("web")]:
        for name in imports_of(path):
            assert not name.startswith(internal), (path.name, name)


def test_the_api_page_names_every_public_name() -> None:
    page = (ROOT / "docs" / "api.md").read_text()
    missing = [name for name in epoch.__all__ if name != "__version__" and f"`{name}`" not in page]
    assert missing == []
