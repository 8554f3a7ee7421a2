"""The suite itself: with PostgreSQL required, an unreachable server fails the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_required_postgres_that_is_unreachable_fails_the_run() -> None:
    """CI sets CUSTODIA_TEST_POSTGRES_URL; then a dead server must never turn into skips."""
    env = {**os.environ, "CUSTODIA_TEST_POSTGRES_URL": "postgresql://postgres@127.0.0.1:1/x"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/api/test_health.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "PostgreSQL is unreachable" in result.stdout + result.stderr
    assert " passed" not in result.stdout
