"""A lock on a run's output folder: one run writes a folder at a time.

Two runs writing one folder mix their checkpoints and results without a word; a distributed run has
several processes that must agree which of them owns the folder. The lock is a file, ``run.lock``,
created atomically (O_CREAT | O_EXCL) and holding who took it (host, pid, when, what), so the error a
second run gets names the first one. A lock left by a process that no longer exists on this host (a
run killed with SIGKILL) is stale and is taken over; a lock from another host cannot be checked from
here, so the message says how to remove it once that run is known to be gone.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from taxonomy.errors import AttackgenError

LOCK = "run.lock"


class FolderBusy(AttackgenError):
    """Another live run holds the output folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class FolderLock:
    """``with FolderLock(out, "attackgen run (2 ranks)"):`` holds ``out/run.lock`` for the block."""

    def __init__(self, folder: str | Path, what: str) -> None:
        self.path = Path(folder) / LOCK
        self.what = what
        self.held = False
        self.took_over: dict[str, Any] | None = None  # the stale lock replaced, if any

    def holder(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"host": "?", "pid": -1, "started": "?", "what": f"(unreadable {LOCK})"}

    def acquire(self) -> FolderLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return self._acquire()
        except OSError as error:  # a folder that cannot be created or written: named, not a traceback
            raise AttackgenError(f"-o {self.path.parent}: cannot create {LOCK} there ({error.strerror or error}); "
                                 "choose a writable output folder.") from None

    def _acquire(self) -> FolderLock:
        record = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "what": self.what}
        for _ in range(3):  # a stale lock is removed and the create retried
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is None:
                    continue
                if holder.get("host") == record["host"] and not _alive(int(holder.get("pid", -1))):
                    self.took_over = holder
                    self.path.unlink(missing_ok=True)
                    continue
                raise FolderBusy(
                    f"-o {self.path.parent}: another run holds this folder ({holder.get('what')}, host "
                    f"{holder.get('host')}, pid {holder.get('pid')}, started {holder.get('started')}); wait for "
                    f"it to finish (--resume continues a run only once it has stopped) or choose another output "
                    f"folder. If that run is gone (a node that was lost), delete {self.path} and run again with "
                    "--resume."
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(record, handle)
            self.held = True
            return self
        raise FolderBusy(f"-o {self.path.parent}: cannot take {LOCK} (it keeps reappearing); another run is starting "
                         "in this folder.")

    def release(self) -> None:
        if self.held:
            holder = self.holder()
            if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
