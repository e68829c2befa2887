"""``make test`` sets itself up: a missing service is installed or named in one line, never skipped.

scripts/services.sh installs a missing Debian package (PostgreSQL, chromium) when it runs as root and
otherwise fails with one line naming it; scripts/test sets ``EPOCH_REQUIRE_BROWSER=1`` (like
``EPOCH_REQUIRE_POSTGRES=1``) so that a browser test without chromium fails instead of skipping.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MISSING = "/nonexistent/chromium"


def run_browser_tests(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "EPOCH_REQUIRE_BROWSER")}
    command = [sys.executable, "-m", "pytest", "tests/test_web_browser.py", "-q", "-p", "no:cacheprovider"]
    return subprocess.run(
        command, cwd=ROOT, env={**base, "EPOCH_CHROMIUM": MISSING, **env}, capture_output=True, text=True, timeout=120
    )


def test_a_browser_test_without_chromium_fails_when_the_browser_is_required() -> None:
    done = run_browser_tests(EPOCH_REQUIRE_BROWSER="1")
    assert done.returncode == 1, done.stdout
    assert (
        f"Failed: chromium is required here but unavailable: {MISSING} is missing (apt-get install -y chromium)"
        in done.stdout
    ), done.stdout
    assert re.fullmatch(r"2 errors in [0-9.]+s", done.stdout.splitlines()[-1]), done.stdout  # SQLite, PostgreSQL


def test_a_bare_pytest_run_without_chromium_skips() -> None:
    done = run_browser_tests()
    assert done.returncode == 0, done.stdout
    skipped = rf"SKIPPED \[2\] tests/test_web_browser.py:[0-9]+: {MISSING} is missing \(apt-get install -y chromium\)"
    assert re.search(skipped, done.stdout), done.stdout
    assert re.fullmatch(r"2 skipped in [0-9.]+s", done.stdout.splitlines()[-1]), done.stdout


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX only")
def test_services_name_a_missing_package_in_one_line_when_not_root() -> None:
    script = (ROOT / "scripts" / "services.sh").read_text() + "\nbrowser_up\n"
    command = ["bash", "-c", script]
    if os.geteuid() == 0:  # root would install it: run as an ordinary user
        command = ["runuser", "-u", "nobody", "--", *command]
    done = subprocess.run(
        command, cwd="/", env={"PATH": os.environ["PATH"], "EPOCH_CHROMIUM": MISSING}, capture_output=True, text=True
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"the tests need chromium (for the browser tests, at {MISSING}): install it with"
        " `sudo apt-get install -y chromium` (or run as root, which installs it)\n"
    )
