"""The operator CLI, run as a real command."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from clarion.store.db import head_revision

CLARION = [sys.executable, "-m", "clarion"]


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    return subprocess.run(
        [*CLARION, *args],
        cwd=tmp_path,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_version_names_package_and_schema(tmp_path: Path) -> None:
    result = run(tmp_path, "version")
    assert result.returncode == 0
    assert result.stdout.startswith("clarion ") and f"schema {head_revision()}" in result.stdout


def test_migrate_then_app_create_and_list(tmp_path: Path) -> None:
    migrated = run(tmp_path, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert f"empty -> {head_revision()}" in migrated.stdout
    assert run(tmp_path, "app", "create", "mobile-app").returncode == 0
    duplicate = run(tmp_path, "app", "create", "mobile-app")
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    listed = run(tmp_path, "app", "list")
    assert listed.returncode == 0 and "mobile-app" in listed.stdout


def test_config_file_is_read(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere.db"
    config = tmp_path / "clarion.toml"
    config.write_text(f'database_url = "sqlite:///{db}"\n')
    assert run(tmp_path, "app", "create", "from-toml", "--config", str(config)).returncode == 0
    assert db.is_file() and not (tmp_path / "clarion.db").exists()
    # The environment wins over the file.
    other = tmp_path / "env.db"
    result = run(
        tmp_path, "app", "list", "--config", str(config), CLARION_DATABASE_URL=f"sqlite:///{other}"
    )
    assert result.returncode == 0 and "from-toml" not in result.stdout and other.is_file()


def test_every_command_has_useful_help(tmp_path: Path) -> None:
    for args in (
        ["--help"],
        ["serve", "--help"],
        ["migrate", "--help"],
        ["app", "create", "--help"],
    ):
        result = run(tmp_path, *args)
        assert result.returncode == 0 and "Usage" in result.stdout
    assert "--port" in run(tmp_path, "serve", "--help").stdout


def test_send_checks_the_message_as_the_api_does(tmp_path: Path) -> None:
    assert run(tmp_path, "app", "create", "mobile-app").returncode == 0
    empty = run(tmp_path, "send", "--app", "mobile-app", "--user", "alice")
    assert empty.returncode == 1 and "--title or --body" in empty.stderr
    long = run(tmp_path, "send", "--app", "mobile-app", "--user", "alice", "--title", "x" * 3000)
    assert long.returncode == 1 and "title" in long.stderr and "Traceback" not in long.stderr
    sent = run(tmp_path, "send", "--app", "mobile-app", "--user", "alice", "--title", "Hi")
    assert sent.returncode == 0, sent.stderr  # no devices: a table of zeros
    assert "total" in sent.stdout


def test_configuration_mistakes_are_one_clear_line_not_a_traceback(tmp_path: Path) -> None:
    key = {"CLARION_SECRET_KEY": "0123456789abcdef0123456789abcdef"}
    missing_db = "postgresql://postgres@127.0.0.1:5432/clarion_no_such_database_here"
    cases = [
        (("app", "list"), {"CLARION_LOG_LEVEL": "bogus"}, 2, "CLARION_LOG_LEVEL"),
        (("serve",), {"CLARION_PORT": "abc"}, 2, "CLARION_PORT"),
        (
            ("serve",),
            {"CLARION_ADMIN_TOKEN": ""},
            2,
            "invalid setting admin_token (CLARION_ADMIN_TOKEN): must be at least 16 characters",
        ),
        (
            ("serve",),
            {"CLARION_ADMIN_USERNAME": "ops"},
            2,
            "invalid settings: CLARION_ADMIN_USERNAME and CLARION_ADMIN_PASSWORD are set together",
        ),
        (
            ("serve",),
            {"CLARION_PROVIDER_CA_FILE": str(tmp_path / "none.pem")},
            2,
            "cannot read the CA file",
        ),
        (("migrate", "--revision", "bogus"), {}, 1, "Can't locate revision"),
        (("app", "list"), {"CLARION_DATABASE_URL": "mysql://x@127.0.0.1/db", **key}, 2, "URL"),
        (("app", "list"), {"CLARION_DATABASE_URL": missing_db, **key}, 1, "does not exist"),
    ]
    for args, env, status, says in cases:
        result = run(tmp_path, *args, **env)
        assert result.returncode == status, (args, env, result.stderr)
        assert says in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr and "╭" not in result.stderr, result.stderr


def test_migrate_goes_forward_only_and_names_a_newer_schema(tmp_path: Path) -> None:
    assert run(tmp_path, "migrate").returncode == 0
    back = run(tmp_path, "migrate", "--revision", "0005")
    assert back.returncode == 1 and "forward only" in back.stderr  # was a silent no-op
    with sqlite3.connect(tmp_path / "clarion.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '0099'")
    for args in (("migrate",), ("app", "list")):
        result = run(tmp_path, *args)
        assert result.returncode == 1, result.stderr
        assert "0099, which this clarion does not know" in result.stderr  # not 'run migrate'
        assert "Traceback" not in result.stderr


def test_clarion_config_file_is_read_as_config_is(tmp_path: Path) -> None:
    """It was ignored: a command given a config file this way ran on the SQLite default."""
    config = tmp_path / "clarion.toml"
    config.write_text('databse_url = "sqlite:///elsewhere.db"\n')
    typo = run(tmp_path, "migrate", CLARION_CONFIG_FILE=str(config))
    assert typo.returncode == 2 and "no such setting: databse_url" in typo.stderr
    missing = run(tmp_path, "migrate", CLARION_CONFIG_FILE=str(tmp_path / "none.toml"))
    assert missing.returncode == 2 and "config file not found" in missing.stderr
    config.write_text(f'database_url = "sqlite:///{tmp_path / "elsewhere.db"}"\n')
    assert run(tmp_path, "migrate", CLARION_CONFIG_FILE=str(config)).returncode == 0
    assert (tmp_path / "elsewhere.db").is_file() and not (tmp_path / "clarion.db").exists()


def test_prune_deletes_old_message_ids_and_says_how_many(tmp_path: Path) -> None:
    assert run(tmp_path, "migrate").returncode == 0
    assert run(tmp_path, "app", "create", "wallet-tenant").returncode == 0
    with sqlite3.connect(tmp_path / "clarion.db") as db:
        (app,) = db.execute("SELECT id FROM applications").fetchone()
        db.executemany(
            "INSERT INTO wc_messages (application_id, client_id, message_id, created_at)"
            " VALUES (?, 'wallet', ?, ?)",
            [
                (app, "old", "2020-01-01 00:00:00.000000"),
                (app, "new", "2999-01-01 00:00:00.000000"),
            ],
        )
    kept = run(tmp_path, "prune", CLARION_RETENTION_DAYS="0")
    assert kept.returncode == 0 and "nothing deleted" in kept.stdout
    default = run(tmp_path, "prune")  # WalletConnect ids are kept unless asked
    assert default.returncode == 0 and "no WalletConnect message ids" in default.stdout
    pruned = run(tmp_path, "prune", "--wc-days", "30")
    assert pruned.returncode == 0, pruned.stderr
    assert "1 WalletConnect message ids older than 30 days" in " ".join(pruned.stdout.split())
    with sqlite3.connect(tmp_path / "clarion.db") as db:
        assert db.execute("SELECT message_id FROM wc_messages").fetchall() == [("new",)]
