"""Atomic, pickle-free checkpoints with retention and fallback past corrupted files: the store.

:class:`CheckpointStore` keeps a directory of numbered checkpoint files, ``ckpt-<seq:09d>.npz``.
The file format (arrays plus a manifest with a checksum) and :func:`pack`/:func:`unpack` are in
:mod:`online_gmm._checkpoint_file`; this module re-exports them (:func:`write_checkpoint`,
:func:`read_checkpoint`, :class:`CheckpointError`, ``FORMAT_VERSION``).

One file means one rename makes a checkpoint visible: :meth:`CheckpointStore.save` writes a hidden
temporary file in the same directory, flushes and fsyncs it, renames it into place, and fsyncs the
directory; only then are checkpoints beyond the newest ``keep`` deleted. Reading uses
``numpy.load(..., allow_pickle=False)`` and validates the manifest, the entry list, dtypes, shapes and
the checksum, so a truncated, bit-flipped or foreign file is reported (:class:`CheckpointWarning`) and
the previous checkpoint used; a file containing an object array is refused without unpickling it.

One writer per directory: :meth:`CheckpointStore.lock` takes an exclusive OS lock
(``fcntl.flock``) on ``<directory>/.lock``, so a second process running the same job refuses to
start (:class:`CheckpointLockedError`) instead of interleaving its outputs with the first. The OS
releases the lock when its holder exits, even on SIGKILL, so a killed job never leaves a stale lock.

A fresh start (no checkpoint yet) is recorded in ``<directory>/fresh-start.json``
(:meth:`CheckpointStore.save_start`): the positions of the sinks before the job's first write, so that
a job killed before its first checkpoint can undo what it wrote (see :mod:`online_gmm.pipeline`).
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from online_gmm._checkpoint_file import (
    FORMAT_VERSION,
    CheckpointError,
    pack,
    read_checkpoint,
    unpack,
    write_checkpoint,
)

__all__ = ["CheckpointStore", "CheckpointError", "CheckpointLockedError", "CheckpointWarning",
           "read_checkpoint", "write_checkpoint", "pack", "unpack", "FORMAT_VERSION"]

_NAME_RE = re.compile(r"^ckpt-(\d{9})\.npz$")
_TMP_PREFIX = ".ckpt-"
_TMP_SUFFIX = ".tmp"
_LOCK_NAME = ".lock"
_START_NAME = "fresh-start.json"
#: locks held by this process: real directory path -> [file descriptor, number of holders]
_HELD: dict[str, list[int]] = {}


class CheckpointLockedError(CheckpointError):
    """Another process holds the checkpoint directory's lock (the same job is already running)."""


class CheckpointWarning(UserWarning):
    """A checkpoint file was unusable and skipped (the message names the file)."""


# ==================================================================================================
# the store
# ==================================================================================================
class CheckpointStore:
    """A directory of numbered checkpoints: atomic saves, retention, newest-good loading.

    Parameters
    ----------
    directory : str or Path
        Created if missing.
    keep : int, default=3
        Number of newest checkpoints kept after each save (>= 1).
    compress : bool, default=False
        Write compressed archives (smaller, slower).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from online_gmm.checkpoint import CheckpointStore
    >>> store = CheckpointStore(tempfile.mkdtemp(), keep=2)
    >>> store.load_latest() is None
    True
    >>> path = store.save({"w": np.arange(3.0)}, {"n_seen": 3})
    >>> path.name
    'ckpt-000000001.npz'
    >>> arrays, meta, _ = store.load_latest()
    >>> arrays["w"], meta
    (array([0., 1., 2.]), {'n_seen': 3})
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3, *, compress: bool = False) -> None:
        if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)) or keep < 1:
            raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keep = int(keep)
        self.compress = bool(compress)
        self._last_seq = 0
        self._locked = False
        self._writer = False   # saved or locked: only the writer may delete stray temporaries

    # ------------------------------------------------------------------ listing
    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(seq, path)`` of every checkpoint file, oldest first (temporary files excluded)."""
        found = []
        for entry in self.directory.iterdir():
            m = _NAME_RE.match(entry.name)
            if m and entry.is_file():
                found.append((int(m.group(1)), entry))
        return sorted(found)

    def _stray_temporaries(self) -> list[Path]:
        return [p for p in self.directory.iterdir()
                if p.name.startswith(_TMP_PREFIX) and p.name.endswith(_TMP_SUFFIX)]

    def clean_temporaries(self) -> list[Path]:
        """Delete temporary files left by an interrupted save; returns them."""
        removed = []
        for p in self._stray_temporaries():
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:
                pass
        return removed

    # ------------------------------------------------------------------ save
    def save(self, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> Path:
        """Write one checkpoint atomically and apply retention.

        Parameters
        ----------
        arrays : mapping of str to ndarray
            Numeric or boolean arrays (see :func:`pack` to combine several components).
        meta : dict
            JSON-able metadata.

        Returns
        -------
        Path
            The new checkpoint file.
        """
        return self.save_encoded(*self.encode(arrays, meta))

    def encode(self, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> tuple[int, bytes]:
        """The next checkpoint's sequence number and bytes, for :meth:`save_encoded`.

        ``arrays`` and ``meta`` are read here, so they may change afterwards: the bytes are a
        snapshot, which :meth:`save_encoded` may write on another thread. Only one checkpoint may be
        between the two calls at a time.

        Returns
        -------
        seq : int
        data : bytes
            The whole ``.npz`` file.
        """
        existing = self.checkpoints()
        seq = max(self._last_seq, existing[-1][0] if existing else 0) + 1
        buf = io.BytesIO()
        write_checkpoint(buf, arrays, meta, seq=seq, compress=self.compress)
        return seq, buf.getvalue()

    def save_encoded(self, seq: int, data: bytes) -> Path:
        """Write checkpoint ``seq`` from :meth:`encode`'s bytes atomically, and apply retention.

        A hidden temporary file in the directory, flushed and fsynced, renamed into place, then the
        directory fsynced; only then are checkpoints beyond the newest ``keep`` deleted.

        Returns
        -------
        Path
            The new checkpoint file.
        """
        self._writer = True
        self.clean_temporaries()
        final = self.directory / f"ckpt-{seq:09d}.npz"
        fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=self.directory)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
            raise
        _fsync_directory(self.directory)
        self._last_seq = max(self._last_seq, seq)
        for _, old in self.checkpoints()[:-self.keep]:
            try:
                old.unlink()
            except FileNotFoundError:
                pass
        return final

    # ------------------------------------------------------------------ one writer
    def lock(self) -> None:
        """Take the directory's exclusive lock, or raise if another process holds it.

        The lock is an ``fcntl.flock`` on ``<directory>/.lock`` that holds the owner's PID. Within one
        process the lock is shared (every store of the directory may hold it; it is released when the
        last one calls :meth:`unlock`): it keeps other processes out, not other objects. Where
        ``fcntl`` does not exist (Windows) this is a no-op.

        Raises
        ------
        CheckpointLockedError
            Naming the directory and the PID of the process that holds it.
        """
        if self._locked:
            return
        self._writer = True
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        key = os.path.realpath(self.directory)
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
            self._locked = True
            return
        path = self.directory / _LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise CheckpointLockedError(
                f"checkpoint directory {str(self.directory)!r} is in use by another process (pid "
                f"{holder}): the same job is already running; stop it or use another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        _HELD[key] = [fd, 1]
        self._locked = True

    def unlock(self) -> None:
        """Release this store's hold on the directory lock (idempotent)."""
        if not self._locked:
            return
        self._locked = False
        key = os.path.realpath(self.directory)
        held = _HELD.get(key)
        if held is None:  # pragma: no cover - defensive
            return
        held[1] -= 1
        if held[1] <= 0:
            del _HELD[key]
            os.close(held[0])   # closing the descriptor releases the flock

    @staticmethod
    def remove_bookkeeping(directory: str | os.PathLike) -> None:
        """Delete the lock file and the fresh-start record of ``directory`` (never a checkpoint).

        For a command whose start failed: it removes what it created. Call it only when no process
        holds the lock (e.g. the caller just released it)."""
        for name in (_LOCK_NAME, _START_NAME):
            try:
                (Path(directory) / name).unlink()
            except FileNotFoundError:
                pass

    # ------------------------------------------------------------------ fresh start
    def save_start(self, meta: dict[str, Any]) -> Path:
        """Durably write the fresh-start record (JSON-able ``meta``), replacing any earlier one."""
        try:
            data = json.dumps(meta, sort_keys=True).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"fresh-start record must be JSON-able: {exc}") from None
        final = self.directory / _START_NAME
        fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, final)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_directory(self.directory)
        return final

    def load_start(self) -> dict[str, Any] | None:
        """The fresh-start record, or None if there is none (or it is unreadable: it is then ignored)."""
        try:
            meta = json.loads((self.directory / _START_NAME).read_bytes().decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            warnings.warn(f"ignoring unreadable {self.directory / _START_NAME}: {exc}",
                          CheckpointWarning, stacklevel=2)
            return None
        return meta if isinstance(meta, dict) else None

    # ------------------------------------------------------------------ load
    def load_latest(self) -> tuple[dict[str, np.ndarray], dict[str, Any], Path] | None:
        """The newest checkpoint that validates.

        A store that writes (it has saved or holds the lock) first deletes the temporary files of an
        interrupted save; a store that only reads leaves them, since they may be a save in flight.

        Returns
        -------
        (arrays, meta, path) or None
            None when the directory holds no checkpoint at all (a fresh start).

        Raises
        ------
        CheckpointError
            When checkpoint files exist but none is usable.

        Warns
        -----
        CheckpointWarning
            For every newer file that was skipped, naming it and the reason.
        """
        if self._writer:      # a reader (`inspect` while the job runs) must not delete a save in flight
            self.clean_temporaries()
        found = self.checkpoints()
        if not found:
            return None
        errors = []
        for seq, path in reversed(found):
            try:
                arrays, meta = read_checkpoint(path)
            except CheckpointError as exc:
                warnings.warn(f"skipping unusable checkpoint {path}: {exc}", CheckpointWarning,
                              stacklevel=2)
                errors.append(str(exc))
                continue
            self._last_seq = max(self._last_seq, found[-1][0])
            return arrays, meta, path
        raise CheckpointError(
            f"no usable checkpoint in {self.directory} ({len(found)} file(s) tried): " + "; ".join(errors))

    def __repr__(self) -> str:
        return f"CheckpointStore({str(self.directory)!r}, keep={self.keep})"


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)
