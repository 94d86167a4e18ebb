"""The command line, run as a user runs it: a real subprocess, real files, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import write

COMMANDS = [
    "init",
    "generate",
    "ingest",
    "info",
    "features",
    "materialize",
    "evaluate",
    "train",
    "index",
    "similar",
]


def shortlist(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shortlist.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_on_every_command(command):
    result = shortlist(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    if command is None:
        for c in COMMANDS:
            assert c in result.stdout


def test_ingest_then_info(tmp_path):
    src = tmp_path / "src"
    write(src, "items.csv", "item_id,colour\nA,red\nB,blue\n")
    write(src, "interactions.csv", "user_id,item_id,timestamp\nu1,A,2020-01-01\nu2,B,2020-01-02\n")
    ws = tmp_path / "ws"
    result = shortlist("--workspace", str(ws), "ingest", "--source", str(src))
    assert result.returncode == 0, result.stderr
    assert "Ingested in" in result.stdout and "interactions" in result.stdout
    assert "Reading interactions.csv: done" in result.stderr  # progress lines in logs
    info = shortlist("-w", str(ws), "info")
    assert info.returncode == 0
    assert "2020-01-01 00:00 to 2020-01-02 00:00" in info.stdout


def test_user_errors_print_one_line_not_a_traceback(tmp_path):
    src = tmp_path / "src"
    write(src, "items.csv", "item_id\nA\n")
    write(src, "interactions.csv", "user_id,item_id,timestamp\nu1,B,2020-01-01\n")
    result = shortlist("-q", "-w", str(tmp_path / "ws"), "ingest", "--source", str(src))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert (
        "interactions.csv:2 column 'item_id': unknown item (not in items.csv): 'B'" in result.stderr
    )
    info = shortlist("-w", str(tmp_path / "ws"), "info")
    assert info.returncode == 1
    assert "holds no data yet: run `shortlist build --source DIR`" in info.stderr


def test_bad_flag_value_is_a_usage_error(tmp_path):
    result = shortlist("ingest", "--source", str(tmp_path), "--on-bad-rows", "sometimes")
    assert result.returncode == 2
    assert "Invalid value for '--on-bad-rows'" in result.stderr


def test_the_workspace_option_is_also_accepted_after_the_command(tmp_path):
    result = shortlist("-w", str(tmp_path / "ignored"), "init", "--workspace", str(tmp_path / "w"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "w" / "shortlist.toml").is_file()
    assert not (tmp_path / "ignored").exists()
    info = shortlist("info", "-w", str(tmp_path / "w"))
    assert info.returncode == 1 and str(tmp_path / "w") in info.stderr


def test_init_writes_settings(tmp_path):
    result = shortlist("-w", str(tmp_path / "ws"), "init")
    assert result.returncode == 0
    assert (tmp_path / "ws" / "shortlist.toml").read_text().startswith("# shortlist.toml")


def test_workspace_from_environment(tmp_path):
    env_ws = tmp_path / "from_env"
    result = subprocess.run(
        [sys.executable, "-m", "shortlist.cli", "init"],
        capture_output=True,
        text=True,
        env={"SHORTLIST_WORKSPACE": str(env_ws), "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert (env_ws / "shortlist.toml").is_file()
