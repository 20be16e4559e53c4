"""
Run folders that two processes cannot share: claiming a fresh folder, and a lock on an OUTPUT_DIR.

- :func:`claim_dir`: a folder is claimed by creating a marker file in it, which only one process can
  create (``link`` onto an existing name fails, as ``O_EXCL``), never by checking that it is free: of two
  runs started together, one gets the folder and the other moves on to the next.
- :class:`OutputDirLock`: a lock file (``<folder>/.gridclip-lock``, created the same atomic way) holding
  the holder's host, pid, process start time and command. A second run into the folder is refused with a
  :class:`OutputDirLockedError` naming the holder. A lock whose holder died (same host, pid gone or
  reused by another process) is stale: it is taken over with one warning. The same process may take
  it again (re-entrant). ``release`` removes it; so does process exit (``atexit``).
"""
import atexit
import json
import logging
import os
import socket
import sys
import tempfile
import time

from .file_io import current_umask
from .tool_errors import ToolError

__all__ = ["CLAIM_FILE", "LOCK_FILE", "OutputDirLockedError", "OutputDirLock", "claim_dir", "holder_alive"]

#: marker created (atomically, once) in a new or empty folder to claim it
CLAIM_FILE = ".gridclip-claimed"
#: the lock file of an OUTPUT_DIR
LOCK_FILE = ".gridclip-lock"

logger = logging.getLogger(__name__)


class OutputDirLockedError(ToolError):
    """Another live process holds the folder's lock (one line for tools, :mod:`gridclip.tool_errors`)."""


def _process_start_ticks(pid):
    """The start time of ``pid`` in clock ticks since boot (/proc), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _this_holder():
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start_ticks": _process_start_ticks(os.getpid()),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv)[:300],
    }


def holder_alive(holder) -> bool:
    """False when ``holder`` (a lock's record) is certainly dead: same host, and its pid is gone or now
    belongs to a process started at another time. A holder on another host counts as alive."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    recorded, current = holder.get("start_ticks"), _process_start_ticks(pid)
    return recorded is None or current is None or recorded == current


def describe_holder(holder) -> str:
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')} "
            f"({holder.get('command') or 'unknown command'})")


def _create_exclusive(path, text) -> bool:
    """
    Create ``path`` holding ``text`` unless it exists, atomically and complete: the text is written to a
    unique temporary file that is then hard-linked to ``path`` (``link`` fails if ``path`` exists, like
    ``O_EXCL``), so no reader ever sees a half-written record. False if ``path`` exists.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".gridclip-new" + os.path.basename(path) + ".", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~current_umask())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: O_EXCL (a reader may see it empty for a moment)
            try:
                out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                return False
            with os.fdopen(out, "w") as f:
                f.write(text)
        return True
    finally:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass


def _age(path) -> float:
    try:
        return time.time() - os.path.getmtime(path)
    except OSError:
        return 0.0


def _read_record(path):
    """The JSON record of a lock / claim file; None if missing, {} if unreadable (no holder to name)."""
    try:
        with open(path) as f:
            record = json.load(f)
        return record if isinstance(record, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def claim_dir(path) -> bool:
    """
    Claim ``path`` for this run: True if it was missing or empty and this call created its claim marker
    (:data:`CLAIM_FILE`, atomically, see :func:`_create_exclusive`); False if it holds anything else or
    another run claimed it first. Of several runs claiming one folder at once, exactly one gets True.
    The folder (and its parents) is created when missing.
    """
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:  # a file of that name
        return False
    if not os.path.isdir(path) or any(name != CLAIM_FILE for name in os.listdir(path)):
        return False
    marker = os.path.join(path, CLAIM_FILE)
    if _create_exclusive(marker, json.dumps(_this_holder()) + "\n"):
        return True
    # Only a marker: claimed by a run that is alive (its folder), or that died before writing anything
    # (the folder is free again; one of several runs finding it so takes it over, as a stale lock).
    holder = _read_record(marker)
    if holder is None or (holder and holder_alive(holder)) or os.listdir(path) != [CLAIM_FILE]:
        return False
    OutputDirLock(path, "folder", lock_name=CLAIM_FILE)._remove_stale(holder)
    return not os.listdir(path) and _create_exclusive(marker, json.dumps(_this_holder()) + "\n")


class OutputDirLock:
    """
    The lock of one run on its output folder (see the module docstring).

    Args:
        folder (str): the output folder (created if missing).
        what (str): what the folder is, for messages (e.g. "OUTPUT_DIR").
    """

    def __init__(self, folder, what="OUTPUT_DIR", lock_name=LOCK_FILE):
        self.folder = folder
        self.what = what
        self.path = os.path.join(folder, lock_name)
        self.held = False

    def _read(self):
        return _read_record(self.path)

    def check(self) -> None:
        """Raise :class:`OutputDirLockedError` if another live run holds the lock now (taking nothing: an
        early refusal before anything is written; :meth:`acquire` is the guarantee)."""
        holder = self._read()
        if holder and holder_alive(holder) and not (
                holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid()):
            raise self._locked(holder)

    def _locked(self, holder):
        return OutputDirLockedError(
            f"{self.what} {self.folder} is in use by another run ({describe_holder(holder)}): two runs "
            f"would overwrite each other's checkpoints and metrics. Wait for it, or set {self.what} to "
            f"another folder. If that run is gone, remove {self.path}."
        )

    def acquire(self) -> "OutputDirLock":
        """Take the lock; :class:`OutputDirLockedError` when a live process holds it."""
        os.makedirs(self.folder, exist_ok=True)
        me = _this_holder()
        for _ in range(20):
            if _create_exclusive(self.path, json.dumps(me) + "\n"):
                self.held = True
                atexit.register(self.release)
                return self
            holder = self._read()
            if holder is None:
                continue  # released meanwhile: try again
            if holder.get("host") == me["host"] and holder.get("pid") == me["pid"]:
                self.held = False  # re-entrant: this process's own lock (its first holder releases it)
                return self
            if holder == {} and _age(self.path) < 10:  # being written where hard links are missing
                time.sleep(0.1)
                continue
            if holder and holder_alive(holder):
                raise self._locked(holder)
            self._remove_stale(holder)
        raise OutputDirLockedError(f"Could not take the lock {self.path}: other runs keep taking it.")

    def _remove_stale(self, holder) -> None:
        """Remove the stale lock ``holder`` wrote, once: under a short take-over marker, and only if the
        file still holds that record (two runs finding one stale lock must not remove each other's)."""
        marker = self.path + ".takeover"
        try:
            if time.time() - os.path.getmtime(marker) > 60:  # left by a run that died while taking over
                os.remove(marker)
        except OSError:
            pass
        if not _create_exclusive(marker, str(os.getpid())):
            time.sleep(0.05)
            return
        try:
            if self._read() == holder:
                logger.warning(
                    f"Removing the stale {os.path.basename(self.path)} {self.path} of a run that no longer runs "
                    f"({describe_holder(holder) if holder else 'unreadable record'})."
                )
                os.remove(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.remove(marker)

    def release(self) -> None:
        """Remove the lock file if this object holds it (idempotent)."""
        if not self.held:
            return
        self.held = False
        atexit.unregister(self.release)
        holder = self._read()
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
