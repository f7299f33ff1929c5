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
