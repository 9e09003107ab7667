"""OutputLock: one corpusmill run at a time holds a snapshot directory.

Local outputs are locked with ``flock`` on ``OUT/.corpusmill.lock``: the kernel
releases the lock when its process dies, however it dies, so a lock left by a
killed run is never mistaken for a live one; the next run reads the dead
holder's note from the file and takes over. The file holds the holder's
host, pid, start time and command, so a refused run names who holds the output.

Object stores (``gs://``) have no such lock: there the lock is an object with
the same note and a heartbeat the holder rewrites every ``HEARTBEAT_SECONDS``.
A lock whose heartbeat is older than ``STALE_SECONDS`` is stale and taken over.
Beam's filesystems offer no compare-and-swap, so two runs starting within the
same second could both write the object; each re-reads it after writing and
the one whose note was overwritten gives up. That is advisory, not exclusive,
and documented as such.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
import threading
import time
import uuid

from apache_beam.io.filesystems import FileSystems

from corpusmill.transforms.io.beam.files import exists, read_bytes, write_bytes

LOCK_NAME = ".corpusmill.lock"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 300.0


class OutputLockedError(RuntimeError):
    """Another corpusmill run holds the output directory."""


def is_local(path: str) -> bool:
    """Whether a path is on the local filesystem (no ``scheme://``)."""
    return "://" not in path


def _holder_note(token: str) -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": token,
        "started_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "heartbeat": time.time(),
        "command": " ".join(sys.argv)[:500],
    }


def describe_holder(note: dict | None) -> str:
    """One line naming a lock holder, for messages."""
    if not note:
        return "another corpusmill run"
    return (f"corpusmill pid {note.get('pid')} on {note.get('host')} since {note.get('started_at')} "
            f"({note.get('command') or 'unknown command'})")


def _parse(data: bytes) -> dict | None:
    try:
        note = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return note if isinstance(note, dict) else None


class OutputLock:
    """Held for a whole run: ``with OutputLock(out): ...``.

    Attributes:
        taken_over: The note of a dead holder whose lock this run took over, if any.

    Raises:
        OutputLockedError: on entering, when a live run holds the output.
    """

    def __init__(self, out: str):
        self._out = out.rstrip("/")
        self._path = f"{self._out}/{LOCK_NAME}"
        self._token = uuid.uuid4().hex
        self._fd: int | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.taken_over: dict | None = None

    def __enter__(self) -> "OutputLock":
        if is_local(self._out):
            self._acquire_local()
        else:
            self._acquire_remote()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _acquire_local(self) -> None:
        import fcntl

        os.makedirs(self._out, exist_ok=True)
        while True:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                note = _parse(os.pread(fd, 1 << 16, 0))
                os.close(fd)
                raise OutputLockedError(
                    f"{self._out} is in use by {describe_holder(note)}; wait for that run to end "
                    f"or choose another --output") from None
            try:
                same_file = os.stat(self._path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same_file = False
            if not same_file:
                # The holder removed the file as it released it; lock the new one.
                os.close(fd)
                continue
            self.taken_over = _parse(os.pread(fd, 1 << 16, 0))
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_holder_note(self._token)).encode("utf-8"), 0)
            self._fd = fd
            return

    def _acquire_remote(self) -> None:
        if exists(self._path):
            note = _parse(read_bytes(self._path))
            age = time.time() - float((note or {}).get("heartbeat", 0))
            if age < STALE_SECONDS:
                raise OutputLockedError(
                    f"{self._out} is in use by {describe_holder(note)} (heartbeat {age:.0f} s ago); wait "
                    f"for that run to end, choose another --output, or wait {STALE_SECONDS:.0f} s for a "
                    f"dead run's lock to go stale")
            self.taken_over = note
        write_bytes(self._path, json.dumps(_holder_note(self._token)).encode("utf-8"))
        time.sleep(1.0)
        note = _parse(read_bytes(self._path))
        if (note or {}).get("token") != self._token:
            raise OutputLockedError(f"{self._out} was locked at the same moment by {describe_holder(note)}")
        self._heartbeat = threading.Thread(target=self._beat, daemon=True, name="corpusmill-lock-heartbeat")
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            write_bytes(self._path, json.dumps(_holder_note(self._token)).encode("utf-8"))

    def release(self) -> None:
        """Releases the lock (and removes the lock file); safe to call twice."""
        if self._fd is not None:
            import fcntl

            # Unlinked while still locked: a run that opened the old file
            # sees, once it gets the lock, that the path now names another.
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._heartbeat is not None:
            self._stop.set()
            self._heartbeat.join()
            self._heartbeat = None
            if exists(self._path) and (_parse(read_bytes(self._path)) or {}).get("token") == self._token:
                FileSystems.delete([self._path])


__all__ = ["LOCK_NAME", "OutputLock", "OutputLockedError", "describe_holder", "is_local"]
