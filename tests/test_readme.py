"""The README's promises: its Python example runs as written, its commands exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_example_runs_as_written(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python example"
    result = subprocess.run(
        [sys.executable, "-c", blocks[0]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("repurchase_trending") and "MAP@12 0." in line for line in lines)
    assert len([line for line in lines if re.fullmatch(r"\S+ -?\d\.\d+", line)]) == 5
    assert any(line.startswith("[('retrieve',") and "('take'," in line for line in lines)


def test_every_command_in_the_cli_table_exists():
    commands = set(re.findall(r"^\| `shortlist (\w+)", README.read_text(), flags=re.M))
    assert {"generate", "ingest", "evaluate", "index", "similar"} <= commands
    for command in commands:
        result = subprocess.run(
            [sys.executable, "-m", "shortlist.cli", command, "--help"],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, f"`shortlist {command}` in the README: {result.stderr}"
