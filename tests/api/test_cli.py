"""The ``custodia`` command line as an operator meets it: real processes, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from custodia.core import migrate

CUSTODIA = str(Path(sys.executable).with_name("custodia"))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console script with only the given CUSTODIA_* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODIA_")}
    clean.update(env or {})
    return subprocess.run(  # noqa: S603 - our own console script
        [CUSTODIA, *args], capture_output=True, text=True, env=clean, timeout=60, check=False
    )


def _one_clear_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("custodia: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_version_prints_the_version() -> None:
    result = run("version")
    assert result.returncode == 0
    assert result.stdout.strip() == "0.1.0"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://root@localhost/x", "sqlite:/// or postgresql://"),
        ("definitely not a url", "CUSTODIA_DATABASE_URL"),
        ("postgresql://nobody@127.0.0.1:1/x", "cannot use the database"),
    ],
)
def test_a_bad_database_url_is_one_line_and_exit_2(url: str, fragment: str, tmp_path: Path) -> None:
    result = run(
        "db", "upgrade", env={"CUSTODIA_DATABASE_URL": url, "CUSTODIA_VAR_DIR": str(tmp_path)}
    )
    _one_clear_line(result, fragment)


def test_a_bad_setting_names_the_variable(tmp_path: Path) -> None:
    result = run(
        "db", "current", env={"CUSTODIA_DB_POOL_SIZE": "lots", "CUSTODIA_VAR_DIR": str(tmp_path)}
    )
    _one_clear_line(result, "CUSTODIA_DB_POOL_SIZE")
    result = run("db", "current", env={"CUSTODIA_DB_POOLSIZE": "5"})
    _one_clear_line(result, "CUSTODIA_DB_POOLSIZE is not a Custodia setting")


def test_keys_init_creates_once_and_reports_json(tmp_path: Path) -> None:
    env = {"CUSTODIA_VAR_DIR": str(tmp_path)}
    created = run("keys", "init", "--json", env=env)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout) == {
        "path": str(tmp_path / "keys.json"),
        "environment": "development",
        "created": True,
    }
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600
    _one_clear_line(run("keys", "init", env=env), "already exists")
    again = run("keys", "init", "--if-missing", "--json", env=env)
    assert again.returncode == 0
    assert json.loads(again.stdout)["created"] is False


def test_production_refuses_development_keys(tmp_path: Path) -> None:
    env = {"CUSTODIA_VAR_DIR": str(tmp_path)}
    assert run("keys", "init", env=env).returncode == 0
    result = run("serve", env={**env, "CUSTODIA_ENV": "production"})
    _one_clear_line(result, "production refuses the development keys")


def test_db_upgrade_then_current(tmp_path: Path) -> None:
    env = {"CUSTODIA_VAR_DIR": str(tmp_path)}
    before = run("db", "current", env=env)
    assert before.returncode == 1
    assert "not at head" in before.stdout
    upgraded = run("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    (head,) = migrate.head_revisions()
    assert upgraded.stdout.strip().endswith(f"is at {head}")
    after = run("db", "current", env=env)
    assert after.returncode == 0
    assert "at head" in after.stdout


def test_outbox_status_and_retry(tmp_path: Path) -> None:
    env = {"CUSTODIA_VAR_DIR": str(tmp_path)}
    assert run("db", "upgrade", env=env).returncode == 0
    assert run("keys", "init", env=env).returncode == 0  # which types are consumed: the runtime
    status = run("outbox", "status", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == {
        "pending": 0,
        "dead": 0,
        "oldest_pending_age_s": 0.0,
        "without_consumer": {},
    }
    assert run("outbox", "retry", "--all-dead", env=env).stdout.strip() == "requeued 0 event(s)"
    listed = run("outbox", "list", "--status", "pending", env=env)
    assert (listed.returncode, listed.stdout) == (0, "")
    _one_clear_line(run("outbox", "retry", env=env), "EVENT_ID or pass --all-dead")


# ------------------------------------------------------------------------------ security


@pytest.fixture
def ready_env(tmp_path: Path) -> dict[str, str]:
    """A migrated SQLite database with development keys (fast scrypt for the test)."""
    env = {"CUSTODIA_VAR_DIR": str(tmp_path), "CUSTODIA_SCRYPT_LOG2_N": "4"}
    assert run("keys", "init", env=env).returncode == 0
    assert run("db", "upgrade", env=env).returncode == 0
    return env


def _json_line(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    parsed: dict[str, object] = json.loads(lines[0])
    return parsed


def test_clients_create_list_and_revoke(ready_env: dict[str, str]) -> None:
    created = _json_line(
        run(
            "clients",
            "create",
            "--kind",
            "onboarding_app",
            "--name",
            "App",
            "--json",
            env=ready_env,
        )
    )
    assert set(created) == {"id", "key"}
    assert str(created["key"]).startswith("ck_dev_")
    listed = run("clients", "list", env=ready_env)
    assert created["id"] in listed.stdout
    assert str(created["key"]) not in listed.stdout
    assert run("clients", "revoke", str(created["id"]), env=ready_env).returncode == 0
    assert '"revoked_at":null' not in run("clients", "list", env=ready_env).stdout


def test_a_refused_command_is_one_line_and_exit_2(ready_env: dict[str, str]) -> None:
    result = run("clients", "create", "--kind", "merchant", "--name", "Shop", env=ready_env)
    _one_clear_line(result, "invalid_client")


def test_staff_create_prints_password_and_otpauth_uri_once(ready_env: dict[str, str]) -> None:
    created = _json_line(
        run("staff", "create", "--username", "Alice", "--role", "auditor", "--json", env=ready_env)
    )
    assert {"username", "password", "otpauth_uri"} <= set(created)
    assert created["username"] == "alice"
    assert str(created["otpauth_uri"]).startswith("otpauth://totp/Custodia:alice?secret=")
    again = run("staff", "create", "--username", "alice", "--role", "admin", env=ready_env)
    _one_clear_line(again, "staff_exists")


def test_keys_rotate_then_reencrypt_moves_every_field_to_the_new_key(
    ready_env: dict[str, str], tmp_path: Path
) -> None:
    for name in ("bob", "carol"):
        assert (
            run("staff", "create", "--username", name, "--role", "admin", env=ready_env).returncode
            == 0
        )
    rotated = run("keys", "rotate", env=ready_env)
    assert rotated.returncode == 0, rotated.stderr
    assert "pii: new primary key 2" in rotated.stdout
    assert oct((tmp_path / "keys.json").stat().st_mode & 0o777) == "0o600"
    summary = _json_line(run("keys", "reencrypt", "--json", env=ready_env))
    assert summary["staff.totp_secret"] == {"scanned": 2, "changed": 2}
    again = _json_line(run("keys", "reencrypt", "--json", env=ready_env))
    assert again["staff.totp_secret"] == {"scanned": 2, "changed": 0}  # resumable, idempotent
    import sqlite3  # noqa: PLC0415

    from custodia.core.vault import key_id_of  # noqa: PLC0415

    with sqlite3.connect(tmp_path / "custodia.db") as conn:
        blobs = [row[0] for row in conn.execute("SELECT totp_secret FROM staff")]
    assert [key_id_of(b) for b in blobs] == ["2", "2"]


def test_audit_checkpoint_and_verify(ready_env: dict[str, str], tmp_path: Path) -> None:
    assert (
        run("staff", "create", "--username", "dave", "--role", "admin", env=ready_env).returncode
        == 0
    )
    checkpoint = tmp_path / "checkpoint.json"
    made = run("audit", "checkpoint", "--out", str(checkpoint), env=ready_env)
    assert made.returncode == 0, made.stderr
    assert json.loads(checkpoint.read_text())["size"] == 1
    verified = _json_line(run("audit", "verify", "--checkpoint", str(checkpoint), env=ready_env))
    assert verified["ok"] is True
    assert verified["events_checked"] == 1

    import sqlite3  # noqa: PLC0415

    with sqlite3.connect(tmp_path / "custodia.db") as conn:
        conn.execute("DROP TRIGGER audit_events_no_update")
        conn.execute("UPDATE audit_events SET actor_id = 'mallory'")
    failed = run("audit", "verify", "--checkpoint", str(checkpoint), env=ready_env)
    assert failed.returncode == 1
    report = json.loads(failed.stdout)
    assert (report["ok"], report["failure"], report["first_bad_seq"]) == (False, "modified", 1)


def test_watchlists_load_the_sample(ready_env: dict[str, str]) -> None:
    loaded = _json_line(run("watchlists", "load", "--sample", "--json", env=ready_env))
    assert loaded == {"lists": [{"list_id": "SYNTHETIC-SAMPLE", "version": 1, "entries": 24}]}
    _one_clear_line(run("watchlists", "load", env=ready_env), "PATH or pass --sample")
