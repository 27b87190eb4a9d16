"""One writer per results folder, and clean-up of what killed runs left behind.

The lock is a file ``<results>/<benchmark>/.lock`` created with ``O_EXCL`` and holding the writer's pid, host,
boot id and process start time. A lock whose process is gone (not alive, another boot of this host, or the
pid reused by a younger process) is stale and taken over. A lock held by another host cannot be checked and is
respected; remove the file by hand if that host is gone.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from .errors import GenrecError

log = logging.getLogger("genrec_bench")

LOCK_FILE = ".lock"
#: Prefix of per-cell work folders in the temporary directory: ``genrec-cell-<pid>-<random>``.
WORK_PREFIX = "genrec-cell-"
_WORK_RE = re.compile(rf"{WORK_PREFIX}(\d+)-")
LEGACY_WORK_AGE_S = 24 * 3600
_STALE_CELL_RE = re.compile(r"\.(seed-\d+)\.(tmp|old)-")


class LockedError(GenrecError):
    """Another live process writes to the same results folder."""


def boot_id() -> str:
    """An id that changes when the machine reboots (Linux), else ''."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot (Linux), else ''; tells a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _owner() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "boot_id": boot_id(),
        "start": process_start(os.getpid()),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def holder_is_alive(holder: dict[str, Any]) -> bool:
    """Whether the process recorded in a lock file still runs (assumed so when it is on another host)."""
    if holder.get("host") != socket.gethostname():
        return True
    if holder.get("boot_id") and boot_id() and holder["boot_id"] != boot_id():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    started = holder.get("start")
    return not (started and process_start(pid) and process_start(pid) != started)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # half-written by a process killed while creating it


class ResultsLock:
    """``with ResultsLock(folder):`` makes this process the only writer of ``folder``."""

    def __init__(self, folder: Path, wait: bool = False, poll_seconds: float = 2.0):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.wait = wait
        self.poll_seconds = poll_seconds
        self.held = False

    def _try(self) -> dict[str, Any] | None:
        """Take the lock (None) or return the live holder's record."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read(self.path)
                if holder is None:
                    continue  # released in between
                if holder and holder_is_alive(holder):
                    return holder
                if not holder and time.time() - self._mtime() < 10:
                    return {"pid": "?", "host": "?"}  # being written right now
                log.warning(
                    "taking over the stale lock %s of pid %s (%s)",
                    self.path,
                    holder.get("pid", "?"),
                    "not running" if holder else "unreadable",
                )
                self._unlink_if_same(holder)
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(_owner(), handle)
            self.held = True
            return None
        return _read(self.path) or {"pid": "?", "host": "?"}

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def _unlink_if_same(self, holder: dict[str, Any]) -> None:
        if _read(self.path) == holder:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def _holder(self) -> dict[str, Any] | None:
        """The live holder's record, or None when the lock is free or stale (nothing is taken or removed)."""
        holder = _read(self.path)
        if holder is None or (holder and not holder_is_alive(holder)):
            return None
        return holder or {"pid": "?", "host": "?"}

    def check(self) -> None:
        """Fail (or, with ``wait``, wait) while another live process holds the lock, without taking it."""
        self._wait_for(self._holder)

    def acquire(self) -> None:
        self._wait_for(self._try)

    def _wait_for(self, attempt: Any) -> None:
        announced = False
        while True:
            holder = attempt()
            if holder is None:
                return
            where = f"pid {holder.get('pid')} on {holder.get('host')}"
            if not self.wait:
                raise LockedError(
                    f"{self.folder}: another run ({where}, since {holder.get('since', '?')}) is "
                    "writing this results folder; wait for it, pass --wait, or use another --results"
                )
            if not announced:
                log.info("waiting for %s to finish writing %s", where, self.folder)
                announced = True
            time.sleep(self.poll_seconds)

    def release(self) -> None:
        if self.held:
            holder = _read(self.path)
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> ResultsLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def clean_results(benchmark_dir: Path) -> list[str]:
    """Remove the ``.seed-N.tmp-*`` / ``.seed-N.old-*`` folders a killed writer left; call with the lock held.

    An ``.old-*`` folder whose cell is missing is the only copy of that cell (the writer died between the two
    renames of the swap): it is moved back instead of removed. Returns what was done, one line each.
    """
    done = []
    for stale in sorted(Path(benchmark_dir).glob("*/*/.seed-*")):
        match = _STALE_CELL_RE.match(stale.name)
        if not match or not stale.is_dir():
            continue
        cell = stale.parent / match.group(1)
        if match.group(2) == "old" and not cell.exists():
            os.replace(stale, cell)
            done.append(f"restored {cell} from {stale.name}")
        else:
            shutil.rmtree(stale, ignore_errors=True)
            done.append(f"removed {stale}")
    for line in done:
        log.info("clean-up: %s", line)
    return done


def work_prefix() -> str:
    """Prefix of this process's per-cell work folders."""
    return f"{WORK_PREFIX}{os.getpid()}-"


def clean_work_dirs(tmp_dir: str | Path | None = None) -> list[Path]:
    """Remove ``genrec-cell-<pid>-*`` folders of processes that no longer run (on this host's temp dir).

    Folders of the older ``genrec-cell-<random>`` form (no pid) are removed when untouched for a day.
    """
    removed: list[Path] = []
    base = Path(tmp_dir or tempfile.gettempdir())
    try:
        entries = list(base.glob(f"{WORK_PREFIX}*"))
    except OSError:
        return removed
    for entry in entries:
        match = _WORK_RE.match(entry.name)
        try:
            if not entry.is_dir():
                continue
            if match:
                stale = not pid_alive(int(match.group(1)))
            else:  # the old prefix, without a pid: stale once nobody touched it for a day
                stale = time.time() - entry.stat().st_mtime > LEGACY_WORK_AGE_S
        except OSError:
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    if removed:
        log.info("clean-up: removed %d work folder(s) of runs that died (%s)", len(removed), removed[0])
    return removed
