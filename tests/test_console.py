"""The terminal chat, as a person runs it: `hulpwijzer chat` with input piped in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _chat(tmp_path: Path, lines: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HULPWIJZER_VAR": str(tmp_path / "var"),
        "HULPWIJZER_SECRET": "",
        "NLU_BACKEND": "none",
    }
    return subprocess.run(
        [sys.executable, "-m", "bot", "chat", "--db", str(tmp_path / "chat.sqlite3"), *args],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )


def test_a_whole_conversation_can_be_piped_in(tmp_path: Path) -> None:
    # welcome -> Nederlands, safe -> yes, about me, 16-17, threat, not now, don't know
    result = _chat(tmp_path, ["1", "1", "1", "3", "6", "2", "5"])
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "  [1] Nederlands" in out
    assert "Eerst dit: ben je nu veilig?" in out
    assert "0900-8844" in out and "Slachtofferhulp" in out
    assert "Traceback" not in out + result.stderr


def test_first_run_makes_a_secret_and_says_so_once(tmp_path: Path) -> None:
    first = _chat(tmp_path, ["1"])
    second = _chat(tmp_path, ["1"])
    assert "secret key" in first.stderr
    assert "secret key" not in second.stderr
    assert (tmp_path / "var" / "secret.key").exists()


def test_english_and_volunteer_mode_from_the_command_line(tmp_path: Path) -> None:
    result = _chat(tmp_path, ["2"], "--lang", "en", "--mode", "volunteer")
    assert result.returncode == 0, result.stderr
    assert "[Volunteer" in result.stdout
    assert "are you safe right now?" in result.stdout


def test_stop_in_the_terminal_erases_the_stored_session(tmp_path: Path) -> None:
    result = _chat(tmp_path, ["1", "1", "/stop"])
    assert result.returncode == 0
    import sqlite3

    with sqlite3.connect(tmp_path / "chat.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0
