"""The README's and docs' complete programs run as written (fragments with ``...`` are not run)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def programs() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for index, block in enumerate(BLOCK.findall(path.read_text())):
            if "asyncio.run(" in block or "# runs as a test" in block:
                found.append((f"{path.relative_to(ROOT)}#{index}", block))
    return found


def test_the_readme_has_a_runnable_example() -> None:
    assert any(name.startswith("README.md") for name, _ in programs())


@pytest.mark.parametrize(("name", "source"), programs(), ids=[name for name, _ in programs()])
def test_doc_program_runs(name: str, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # programs that write epoch.db write it here
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, name, "exec"), {"__name__": "__main__"})
    printed = out.getvalue()
    if name == "README.md#0":
        assert printed.splitlines()[0].startswith("users-main 0 UserAdded(")
        assert printed.splitlines()[1] == "0 ['ada']"
