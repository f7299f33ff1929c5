"""``./dev``: what a new user sees before anything is installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_python_probe_is_quiet_about_pyenv_shims(tmp_path: Path) -> None:
    # A pyenv shim for a version that is installed but not selected exists and fails loudly.
    shim = tmp_path / "python3.12"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.12: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    (tmp_path / "python3.11").symlink_to(sys.executable)
    functions = subprocess.run(["sed", "-n", "/^say()/p;/^find_python()/,/^}/p", str(ROOT / "dev")],
                               capture_output=True, text=True, check=True).stdout
    result = subprocess.run(["bash", "-c", functions + "\nfind_python"], capture_output=True, text=True,
                            env={**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert result.returncode == 0
    assert result.stdout.strip() == "python3.11"
    assert result.stderr == ""


def test_dev_creates_the_postgresql_roles_when_missing(tmp_path: Path) -> None:
    url = os.environ.get("KAIPIAO_TEST_DATABASE_URL") or ""
    if not url.startswith("postgresql"):
        import pytest

        pytest.skip("needs the local PostgreSQL")
    import psycopg
    from sqlalchemy.engine import make_url

    owner, app = f"kp_dev_owner_{os.getpid()}", f"kp_dev_app_{os.getpid()}"
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    python = tmp_path / ".venv" / "bin" / "python"  # ./dev runs the project's .venv
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    functions = subprocess.run(["sed", "-n", "/^PG_OWNER_ROLE=/,/^PG_APP_ROLE=/p;/^ensure_pg_roles()/,/^}/p",
                                str(ROOT / "dev")], capture_output=True, text=True, check=True).stdout
    env = {**os.environ, "KAIPIAO_PG_OWNER_ROLE": owner, "KAIPIAO_TEST_DATABASE_APP_ROLE": app}
    target = make_url(url)
    conninfo = {"host": target.host, "port": target.port or 5432, "user": "postgres", "dbname": "postgres",
                "autocommit": True}
    try:
        for _ in range(2):  # idempotent
            result = subprocess.run(["bash", "-c", functions + f"\nensure_pg_roles '{url}'"], cwd=tmp_path,
                                    capture_output=True, text=True, env=env)
            assert result.returncode == 0, result.stderr
        with psycopg.connect(**conninfo) as conn:
            found = dict(conn.execute("SELECT rolname, rolsuper FROM pg_roles WHERE rolname IN (%s, %s)",
                                      (owner, app)).fetchall())
        assert found == {owner: False, app: False}
    finally:
        with psycopg.connect(**conninfo) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{owner}"')
            conn.execute(f'DROP ROLE IF EXISTS "{app}"')
