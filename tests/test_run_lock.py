"""A plain `attackgen run` holds its output folder's lock (run.lock), as a torchrun run does: a second run
into the same folder is refused with a message naming the first (exit 2), --resume is refused while the
first is alive, and a lock left by a killed run on this host is taken over with a note."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attackgen.cli.main import run_in_process as cli
from attackgen.run.lock import LOCK

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "tests" / "data" / "checkpoint_b5701a6" / "plan.yaml"  # 2 items, Linf, digits
ARGS = ("--model", "digits-cnn", "--limit", "8", "-b", "4", "-q")


@pytest.fixture
def sleeper():
    """A live process of this host that is not a run: a lock naming it is held."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def hold(out: Path, pid: int, host: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / LOCK).write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid,
                                        "started": "2026-01-01T00:00:00+00:00", "what": "attackgen run"}))


def test_a_second_run_into_a_held_folder_is_refused_naming_the_first(tmp_path, sleeper, capsys):
    out = tmp_path / "run"
    hold(out, sleeper.pid)
    assert cli("run", PLAN, *ARGS, "-o", out) == 2
    err = capsys.readouterr().err
    assert f"-o {out}: another run holds this folder (attackgen run, host {socket.gethostname()}, pid {sleeper.pid}" \
        in err
    assert "Traceback" not in err and not (out / "results.json").exists()
    assert cli("run", PLAN, *ARGS, "-o", out, "--resume") == 2  # resuming a run that is still alive
    assert "--resume continues a run only once it has stopped" in capsys.readouterr().err
    assert json.loads((out / LOCK).read_text())["pid"] == sleeper.pid  # the holder's lock is left alone


def test_a_lock_left_by_a_killed_run_is_taken_over_and_released(tmp_path, capsys):
    out = tmp_path / "run"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    hold(out, int(dead.stdout))
    assert cli("run", PLAN, *ARGS, "-o", out) == 0
    err = capsys.readouterr().err
    assert f"note: took over the lock of a run that is gone (pid {int(dead.stdout)}" in err
    assert json.loads((out / "results.json").read_text())["complete"] is True
    assert not (out / LOCK).exists()


def test_a_lock_from_another_host_is_named_with_how_to_remove_it(tmp_path, capsys):
    out = tmp_path / "run"
    hold(out, 1, host="node-17")
    assert cli("run", PLAN, *ARGS, "-o", out) == 2
    assert f"delete {out / LOCK} and run again with --resume" in capsys.readouterr().err


def test_two_real_runs_into_one_folder(tmp_path, capsys):
    """A run in another process holds the folder while it runs; the second is refused; after a SIGTERM
    stop the lock is gone and --resume finishes the run."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "attackgen", "run", str(PLAN), "--model", "digits-cnn", "-n", "64", "-b", "4",
               "-q", "-o", str(out)]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the lock is taken before the first checkpoint: the run is under way
        assert first.poll() is None, first.communicate()[1][-2000:]
        assert cli("run", PLAN, *ARGS, "-o", out) == 2
        assert f"pid {first.pid}" in capsys.readouterr().err
        first.send_signal(signal.SIGTERM)  # stops after saving what is finished
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 130, err[-2000:]
    assert "--resume" in err and "aborted" not in err  # one account of the stop, not a second line
    assert not (out / LOCK).exists()
    assert cli("run", PLAN, "--model", "digits-cnn", "-n", "64", "-b", "4", "-q", "-o", out, "--resume") == 0
    assert json.loads((out / "results.json").read_text())["complete"] is True
