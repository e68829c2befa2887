"""Documentation code runs as written.

Complete programs (blocks calling ``asyncio.run``) in README.md and docs/ run on their own. A docs page
whose first Python block starts with ``# runs as a test`` runs all its Python blocks in order, in one
namespace, like a session. Other blocks are fragments and are not run.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
MARK = "# runs as a test"


def readme_programs() -> list[str]:
    return [b for b in BLOCK.findall((ROOT / "README.md").read_text()) if "asyncio.run(" in b]


def runnable_pages() -> list[Path]:
    pages = []
    for path in sorted((ROOT / "docs").rglob("*.md")):
        blocks = BLOCK.findall(path.read_text())
        if blocks and blocks[0].startswith(MARK):
            pages.append(path)
    return pages


def run(sources: list[str], name: str) -> str:
    namespace: dict[str, object] = {"__name__": "__main__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for index, source in enumerate(sources):
            exec(compile(source, f"{name}#{index}", "exec"), namespace)
    return out.getvalue()


def test_readme_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    [program] = readme_programs()
    printed = run([program], "README.md").splitlines()
    assert printed[0].startswith("users-main 0 UserAdded(")
    assert printed[1] == "0 ['ada']"


def docs_programs() -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / "docs").rglob("*.md")):
        if path in runnable_pages():
            continue
        for index, block in enumerate(BLOCK.findall(path.read_text())):
            if "asyncio.run(" in block:
                found.append((f"{path.relative_to(ROOT)}#{index}", block))
    return found


def test_some_docs_pages_are_run() -> None:
    assert (ROOT / "docs" / "quickstart.md") in runnable_pages()
    assert any(name.startswith("docs/projections.md") for name, _ in docs_programs())


@pytest.mark.parametrize(("name", "source"), docs_programs(), ids=[name for name, _ in docs_programs()])
def test_docs_program_runs(name: str, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    printed = run([source], name)
    if name.startswith("docs/projections.md"):
        assert "'ada lovelace'" in printed


@pytest.mark.parametrize("page", runnable_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_page_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # pages that write files write them here
    printed = run(BLOCK.findall(page.read_text()), str(page.relative_to(ROOT)))
    if page.name == "quickstart.md":
        assert printed.strip() == "account-42 0 10"
