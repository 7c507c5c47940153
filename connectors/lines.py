"""Line-oriented file sources: JSON Lines and CSV (one record per line); see :mod:`connectors.files`.

Follow mode follows the *path*, as ``tail -F`` does: a file renamed away (rotated) is read to its end
through the handle still open, then the file now at the path is read from offset 0; a file truncated
underneath (copytruncate) is read again from offset 0 with a :class:`TruncationWarning`.  Positions
record which file (inode) is being read and whether the path has since been replaced, so a restarted
source continues in each of these states; :mod:`connectors.files` states what is promised.
"""

from __future__ import annotations

import csv
import fnmatch
import glob as _glob
import gzip
import os
import time
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from connectors._paths import (
    BLOCK_BYTES,
    HEAD_BYTES,
    _check_max_records,
    _check_paths,
    _expand,
    _hash,
)
from connectors.base import (
    constant_column,
    Batch,
    Columns,
    ConnectorError,
    Position,
    PositionError,
    Reject,
    Source,
    concat_columns,
)
from connectors.decoders import CSVDecoder, Decoder, JSONDecoder, shorten

__all__ = ["CSVSource", "JSONLinesSource", "RotationWarning", "TruncationWarning"]

_POSITION_KEYS = {"path", "inode", "head_len", "head", "offset", "line", "records"}
#: Keys a position may carry beyond :data:`_POSITION_KEYS` (absent from positions saved before them).
_OPTIONAL_KEYS = {"rotated"}
#: Columns every batch of a line source has, in this order; carried fields come after them.
_POSITION_COLUMNS = ("source", "file", "line", "offset")
_NO_INDEX = np.empty(0, dtype=np.int64)


class TruncationWarning(UserWarning):
    """A followed file was truncated (or rewritten) underneath the source; it is read again from offset 0."""


class RotationWarning(UserWarning):
    """A position's file was rotated away and cannot be found any more; lines it received after the
    position's offset are not read."""


def _check_carry(carry: Any) -> tuple[Any, ...]:
    """``carry`` as a tuple; its names may not shadow the position columns."""
    if isinstance(carry, (str, bytes)) or not isinstance(carry, Sequence):
        raise TypeError(f"carry must be a sequence of field names, got {carry!r}")
    clash = [c for c in carry if (".".join(c) if isinstance(c, tuple) else c) in _POSITION_COLUMNS]
    if clash:
        raise ValueError(f"carry may not name the position columns {list(_POSITION_COLUMNS)!r}, got {clash!r}")
    return tuple(carry)


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return _NO_INDEX
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class _LineSource(Source):
    """Shared machinery of the line-oriented sources (one record per line).

    Attributes
    ----------
    rotations : int
        Times the followed path was found to name another file than the one being read (rotation),
        counted by this object (live and at :meth:`seek`).
    truncations : int
        Times a followed file was found truncated or rewritten (each also a :class:`TruncationWarning`).
    """

    def __init__(
        self,
        paths: Any,
        *,
        follow: bool,
        name: str | None,
        poll_interval: float,
        block_size: int,
        timeout: float,
    ) -> None:
        _check_paths(paths)
        if not isinstance(poll_interval, (int, float)) or poll_interval <= 0:
            raise ValueError(f"poll_interval must be a positive number of seconds, got {poll_interval!r}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {block_size!r}")
        self.paths = paths
        self.follow = bool(follow)
        self.name = str(name) if name is not None else (
            os.fspath(paths) if isinstance(paths, (str, os.PathLike)) else ",".join(map(os.fspath, paths))
        )
        self.poll_interval = float(poll_interval)
        self.block_size = block_size
        self.timeout = float(timeout)
        self.rotations = 0
        self.truncations = 0
        self._files = _expand(paths)
        if not self._files and not self.follow:
            raise ConnectorError(f"paths matched no file: {paths!r}")
        self._records = 0
        self._fh: Any = None
        self._closed = False
        self._reset_file(None)
        if self._files:
            self._open(self._files[0], 0, 0)

    # -- per-file state -------------------------------------------------------------------------
    def _reset_file(self, path: str | None) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh = None
        self._path = path
        self._ino = 0
        self._gz = False
        self._offset = 0  # byte offset of the next unconsumed line
        self._line = 0  # lines consumed
        self._lines: list[bytes] = []  # complete lines read but not consumed, from self._k on
        self._k = 0
        self._tail = b""  # bytes after the last newline read so far
        self._read_pos = 0  # file position after the data read so far
        self._last_no_newline = False  # self._lines[-1] is a final line without newline
        self._eof = False  # a finished file fully consumed
        self._rotated = False  # follow mode: the path names another file now (or none)
        self._ghost: dict[str, Any] | None = None  # a rotated-away file that could not be found again
        self._head = b""
        self._head_cache: tuple[int, str] = (-1, "")
        self._header_pending = False

    def _open(self, path: str, offset: int, line: int) -> None:
        """Open ``path`` positioned at ``offset`` (raises OSError / PositionError)."""
        self._reset_file(path)
        st = os.stat(path)
        gz = path.endswith(".gz")
        fh = gzip.open(path, "rb") if gz else open(path, "rb")  # noqa: SIM115
        try:
            head = fh.read(HEAD_BYTES)
            if not gz and offset > st.st_size:
                raise PositionError(
                    f"position offset {offset} is beyond the end of {path!r} ({st.st_size} bytes): "
                    "the file was truncated or replaced"
                )
            fh.seek(offset)
            if gz and fh.tell() != offset:
                raise PositionError(
                    f"position offset {offset} is beyond the end of {path!r} "
                    f"({fh.tell()} decompressed bytes): the file was truncated or replaced"
                )
        except BaseException:
            fh.close()
            raise
        self._fh, self._ino, self._gz, self._head = fh, st.st_ino, gz, head
        self._offset = self._read_pos = offset
        self._line = line
        self._on_open(fh, offset)

    def _on_open(self, fh: Any, offset: int) -> None:
        """Hook for subclasses (CSV reads its header here)."""

    def _watching(self) -> bool:
        """Whether the current file is watched for truncation and rotation (follow mode, not gzip)."""
        return self.follow and not self._gz and self._fh is not None

    def _fill(self) -> bool:
        """Read one more block into the line buffer; False if nothing new could be read.

        In follow mode every read is checked against the file's first bytes and size afterwards: a
        file that got shorter than what was read, or whose first bytes changed, was truncated (and
        maybe written again past the old offset); it is then read again from offset 0.
        """
        if self._fh is None or self._eof:
            return False
        data = self._fh.read(self.block_size)
        if self._watching() and self._was_truncated(bool(data)):
            self._restart_truncated()
            return True
        if not data:
            return False
        pos = self._read_pos
        if len(self._head) < HEAD_BYTES and pos <= len(self._head) < pos + len(data):
            self._head += data[len(self._head) - pos: HEAD_BYTES - pos]
        self._read_pos = pos + len(data)
        if self._tail:
            data = self._tail + data
        parts = data.split(b"\n")
        self._tail = parts.pop()
        self._lines = parts
        self._k = 0
        return True

    def _was_truncated(self, got_data: bool) -> bool:
        """The open file is shorter than what was read from it, or its first bytes changed."""
        fd = self._fh.fileno()
        if not got_data and os.fstat(fd).st_size < self._read_pos:
            return True
        return bool(self._head) and os.pread(fd, len(self._head), 0) != self._head

    def _restart_truncated(self) -> None:
        """Warn, count, and read the (same, truncated) file again from offset 0."""
        fh, path, ino, rotated = self._fh, self._path, self._ino, self._rotated
        size = os.fstat(fh.fileno()).st_size
        dropped = (f"; the unterminated line of {len(self._tail)} bytes at offset {self._offset} was "
                   "never completed and is dropped") if self._tail else ""
        warnings.warn(
            f"file {path!r} was truncated or rewritten underneath the source (now {size} bytes; "
            f"{self._read_pos} bytes had been read and records consumed up to offset {self._offset}, "
            f"line {self._line}); reading it again from offset 0{dropped}",
            TruncationWarning,
            stacklevel=4,
        )
        self.truncations += 1
        self._fh = None  # keep the handle open across the reset
        self._reset_file(path)
        fh.seek(0)
        head = fh.read(HEAD_BYTES)
        fh.seek(0)
        self._fh, self._ino, self._head, self._rotated = fh, ino, head, rotated
        self._on_open(fh, 0)

    def _finish_file(self) -> None:
        """The current file will not grow: its unterminated last line (if any) is a record."""
        if self._tail:
            self._lines = [self._tail]
            self._k = 0
            self._tail = b""
            self._last_no_newline = True

    def _take(self, need: int) -> tuple[list[bytes], np.ndarray, np.ndarray]:
        """Up to ``need`` non-blank complete lines of the current file.

        Returns the lines, their byte offsets and their 1-based line numbers (int64 arrays).
        """
        raws: list[bytes] = []
        offs: list[np.ndarray] = []
        lnos: list[np.ndarray] = []
        while len(raws) < need:
            if self._k >= len(self._lines):
                if not self._fill():
                    break
                continue
            lines, k, off, ln = self._lines, self._k, self._offset, self._line
            stop = len(lines)
            chunk = lines[k: k + need - len(raws)]
            m = len(chunk)
            if self._header_pending or b"" in chunk or any(map(bytes.isspace, chunk)):
                o: list[int] = []
                n: list[int] = []
                while k < stop and len(raws) < need:
                    line = lines[k]
                    k += 1
                    ln += 1
                    if self._header_pending:
                        self._header_pending = False
                        self._on_header(line, ln)
                    elif line and not line.isspace():
                        raws.append(line)
                        o.append(off)
                        n.append(ln)
                    off += len(line) + 1
                offs.append(np.array(o, dtype=np.int64))
                lnos.append(np.array(n, dtype=np.int64))
            else:  # the common case: no blank line, no header; offsets by a cumulative sum
                raws += chunk
                ends = np.fromiter(map(len, chunk), dtype=np.int64, count=m)
                ends += 1
                np.cumsum(ends, out=ends)
                ends += off
                starts = np.empty(m, dtype=np.int64)
                starts[0] = off
                starts[1:] = ends[:-1]
                offs.append(starts)
                lnos.append(np.arange(ln + 1, ln + 1 + m, dtype=np.int64))
                off = int(ends[-1])
                k += m
                ln += m
            if self._last_no_newline and k >= stop:
                off -= 1
                self._last_no_newline = False
            self._k, self._offset, self._line = k, off, ln
        return raws, _cat(offs), _cat(lnos)

    def _on_header(self, line: bytes, lineno: int) -> None:
        """Hook: CSV parses its header line here."""

    # -- moving between files -------------------------------------------------------------------
    def _next_file(self) -> str | None:
        if self.follow:
            self._files = _expand(self.paths)
        if self._path is None:
            return self._files[0] if self._files else None
        later = [f for f in self._files if f > self._path]
        return later[0] if later else None

    def _path_inode(self) -> int | None:
        """Inode of the regular file now at the current path (None if there is none)."""
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return st.st_ino if os.path.isfile(self._path) else None

    def _advance(self) -> bool:
        """The current file has no complete line left: finish it or move on. False if nothing to do."""
        if self._path is None:
            nxt = self._next_file()
            if nxt is None:
                return False
            self._open(nxt, 0, 0)
            return True
        if self._eof:
            if self._rotated:  # the rotated-away file is done: continue with the one now at the path
                ino = self._path_inode()
                if ino is not None and ino != self._ino:
                    self._open(self._path, 0, 0)
                    return True
            nxt = self._next_file()
            if nxt is None:
                return False
            self._open(nxt, 0, 0)
            return True
        nxt = self._next_file()
        if self._watching() and not self._rotated:
            if self._path_inode() != self._ino:
                # renamed away (and maybe replaced): first drain the old file through the open handle
                self._rotated = True
                self.rotations += 1
                return True
            if nxt is None:
                return False  # the last followed file: wait for growth
        # finished file (or rotated away): its last line is complete as it stands
        self._finish_file()
        self._eof = True
        return True

    # -- Source API -------------------------------------------------------------------------------
    def _decode(self, raws: list[bytes]) -> tuple[np.ndarray, Any, list[tuple[int, str]], Columns]:
        """Decode ``raws``: the decoder's ``decode_columns`` when it has one (carried fields), else
        ``decode_many`` with no carried columns."""
        decode_columns = getattr(self._decoder, "decode_columns", None)
        if decode_columns is not None:
            return decode_columns(raws)
        X, good, bad = self._decoder.decode_many(raws)
        return X, good, bad, {}

    def read(self, max_records: int, timeout: float | None = None) -> Batch:
        """Next batch of at most ``max_records`` records (good plus rejected); see :meth:`Source.read`.

        Returns as soon as the records at hand are read: it waits (at most ``timeout`` seconds,
        default: the ``timeout`` given at construction, checked every ``poll_interval``) only while it
        has no record at all, and stops with what it has once ``timeout`` has passed.

        Returns
        -------
        Batch
            ``X`` of shape (n_good, n_features); columns ``source``, ``file``, ``line``, ``offset``
            (then any carried fields); status ``"records"``, ``"idle"`` (follow mode) or ``"end"``.
        """
        if self._closed:
            raise ConnectorError(f"source {self.name!r} is closed")
        need = _check_max_records(max_records)
        wait = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + max(wait, 0.0)
        Xs: list[np.ndarray] = []
        parts: list[Columns] = []
        lengths: list[int] = []
        rejects: list[Reject] = []
        n = 0
        ended = False
        while n < need:
            raws, offs, lnos = self._take(need - n) if self._fh is not None else ([], _NO_INDEX, _NO_INDEX)
            if raws:
                n += len(raws)
                self._records += len(raws)
                X, good, bad, carried = self._decode(raws)
                src, path, m = self.name, self._path, X.shape[0]
                if m != len(raws):
                    index = np.asarray(good, dtype=np.intp)
                    offs_good, lnos_good = offs[index], lnos[index]
                else:
                    offs_good, lnos_good = offs, lnos
                cols: Columns = {"source": constant_column(src, m), "file": constant_column(path, m),
                                 "line": lnos_good, "offset": offs_good}
                for key, col in carried.items():
                    cols.setdefault(key, col)
                Xs.append(X)
                parts.append(cols)
                lengths.append(m)
                for j, reason in bad:  # bad records only: one Reject each
                    meta = {"source": src, "file": path, "line": int(lnos[j]), "offset": int(offs[j])}
                    rejects.append(Reject(reason, raws[j], meta))
                if time.monotonic() >= deadline:
                    break
                continue
            if self._advance():
                continue
            if not self.follow:
                ended = True
                break
            if n or time.monotonic() >= deadline:
                break
            time.sleep(max(0.0, min(self.poll_interval, deadline - time.monotonic())))
        d = self._n_features()
        X = np.concatenate(Xs) if len(Xs) > 1 else (Xs[0] if Xs else np.empty((0, d)))
        if parts:
            columns = concat_columns(parts, lengths)
        else:
            columns = {"source": constant_column(self.name, 0), "file": constant_column(None, 0),
                       "line": _NO_INDEX, "offset": _NO_INDEX}
        status = "records" if n else ("end" if ended else "idle")
        return Batch(X, columns, rejects, self.position(), status)

    def _n_features(self) -> int:
        nf = getattr(getattr(self, "_decoder", None), "n_features", None)
        return int(nf) if nf is not None else 0

    def position(self) -> Position:
        """JSON-serialisable position of the next record; see the module docstring."""
        if self._path is None:
            return {"path": None, "inode": 0, "head_len": 0, "head": _hash(b""), "offset": 0,
                    "line": 0, "records": self._records, "rotated": False}
        if self._ghost is not None:  # a rotated-away file that was not found again: keep its position
            return {**self._ghost, "records": self._records, "rotated": True}
        hl = min(HEAD_BYTES, self._offset, len(self._head))
        if self._head_cache[0] != hl:
            self._head_cache = (hl, _hash(self._head[:hl]))
        return {
            "path": self._path,
            "inode": self._ino,
            "head_len": hl,
            "head": self._head_cache[1],
            "offset": self._offset,
            "line": self._line,
            "records": self._records,
            "rotated": self._rotated,
        }

    def seek(self, position: Position) -> None:
        """Resume exactly at ``position`` (from :meth:`position` or :attr:`Batch.position`).

        Without ``follow`` a position must name the very file it was taken in.  With ``follow=True``
        (files that are not gzip) a file changed since then is followed as ``tail -F`` would have:

        * truncated (shorter than the offset, or other first bytes, same inode): read from offset 0,
          with a :class:`TruncationWarning`;
        * rotated away (the path names another file, or none): the old file is looked for in the same
          folder (same inode and first bytes) and read to its end from the offset, then the file now at
          the path from offset 0; if it cannot be found, a :class:`RotationWarning` says that the lines
          it received after the offset are lost, and the file at the path is read from offset 0.

        Raises
        ------
        PositionError
            If the position is malformed or its file is not among this source's files (paths) any more;
            without ``follow`` also if the file was replaced (other inode, other first bytes) or is
            shorter than the position's offset.
        """
        if not isinstance(position, Mapping) or not (
            _POSITION_KEYS <= set(position) <= _POSITION_KEYS | _OPTIONAL_KEYS
        ):
            raise PositionError(
                f"position must be a dict with keys {sorted(_POSITION_KEYS)} (and optionally "
                f"{sorted(_OPTIONAL_KEYS)}), got {shorten(position, 200)}"
            )
        path = position["path"]
        self._files = _expand(self.paths)
        self._records = int(position["records"])
        if path is None:
            self._reset_file(None)
            if self._files:
                self._open(self._files[0], 0, 0)
            return
        if self.follow and not str(path).endswith(".gz") and self._matches(path):
            self._seek_followed(position)
            return
        if path not in self._files:
            raise PositionError(f"file {path!r} of the position does not exist any more (or is not in {self.paths!r})")
        try:
            st = os.stat(path)
        except OSError as exc:
            raise PositionError(f"file {path!r} of the position cannot be opened: {exc}") from exc
        if st.st_ino != position["inode"]:
            raise PositionError(
                f"file {path!r} was replaced: inode {st.st_ino} differs from the position's {position['inode']!r}"
            )
        try:
            self._open(path, int(position["offset"]), int(position["line"]))
        except OSError as exc:
            raise PositionError(f"file {path!r} of the position cannot be read: {exc}") from exc
        hl = int(position["head_len"])
        if len(self._head) < hl or _hash(self._head[:hl]) != position["head"]:
            self._reset_file(None)
            raise PositionError(f"file {path!r} was replaced: its first {hl} bytes differ from the position's")

    def _matches(self, path: str) -> bool:
        """Whether ``path`` is one of this source's paths or matches one of its patterns."""
        items = [self.paths] if isinstance(self.paths, (str, os.PathLike)) else list(self.paths)
        for p in map(os.fspath, items):
            if p == path or (_glob.has_magic(p) and fnmatch.fnmatchcase(path, p)):
                return True
        return False

    def _seek_followed(self, position: Mapping[str, Any]) -> None:
        """:meth:`seek` in follow mode: resume in the file, its truncated self or its rotated-away self."""
        path, ino = position["path"], int(position["inode"])
        offset, line, hl = int(position["offset"]), int(position["line"]), int(position["head_len"])
        self._reset_file(path)
        if self._path_inode() == ino:
            try:
                size = os.stat(path).st_size
                if size >= offset:
                    try:
                        self._open(path, offset, line)
                        if len(self._head) >= hl and _hash(self._head[:hl]) == position["head"]:
                            return
                    except PositionError:  # e.g. a CSV offset now inside the header line
                        pass
                self._open(path, 0, 0)
            except OSError as exc:
                raise PositionError(f"file {path!r} of the position cannot be read: {exc}") from exc
            warnings.warn(
                f"file {path!r} was truncated or rewritten since the position was taken (now {size} "
                f"bytes, the position's offset is {offset}, line {line}): reading it from offset 0; "
                "lines written to it after the position and before the truncation are not read",
                TruncationWarning,
                stacklevel=2,
            )
            self.truncations += 1
            return
        # the path names another file now, or none: the position's file was rotated away
        self.rotations += 1
        old = self._find_rotated(path, ino, offset, hl, position["head"])
        if old is not None:
            try:
                self._open(old, offset, line)
            except OSError as exc:
                raise PositionError(f"rotated file {old!r} of the position cannot be read: {exc}") from exc
            self._path, self._rotated = path, True  # records keep the followed path's name
            return
        folder = os.path.dirname(path) or "."
        then = (f"continuing with the file now at {path!r} from offset 0" if self._path_inode() is not None
                else f"continuing with the file that appears at {path!r} (from offset 0) or the next file")
        warnings.warn(
            f"file {path!r} of the position (inode {ino}) was rotated away and is not in {folder!r} "
            f"any more: the lines it received after offset {offset} (line {line}) are not read; {then}",
            RotationWarning,
            stacklevel=2,
        )
        self._ino, self._offset, self._line = ino, offset, line
        self._eof = self._rotated = True
        self._ghost = {k: position[k] for k in ("path", "inode", "head_len", "head", "offset", "line")}

    @staticmethod
    def _find_rotated(path: str, ino: int, offset: int, head_len: int, head: str) -> str | None:
        """The file in ``path``'s folder with inode ``ino``, at least ``offset`` bytes and first bytes
        hashing to ``head`` (a rotated-away file under its new name), or None."""
        folder = os.path.dirname(path) or "."
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return None
        for entry in entries:
            try:
                if entry.inode() != ino or not entry.is_file(follow_symlinks=False):
                    continue
                with open(entry.path, "rb") as fh:
                    first = fh.read(head_len)
                    size = os.fstat(fh.fileno()).st_size
            except OSError:
                continue
            if size >= offset and len(first) == head_len and _hash(first) == head:
                return entry.path
        return None

    def close(self) -> None:
        """Close the current file; idempotent."""
        self._reset_file(None)
        self._closed = True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.paths!r}, follow={self.follow!r})"

class JSONLinesSource(_LineSource):
    """JSON Lines (one JSON object per line) from one file or a sorted glob of files.

    Parameters
    ----------
    paths : str, path or list of them
        A file, a glob pattern (``"data/*.jsonl"``) or a list of files/patterns; read in sorted order.
        ``.gz`` files are decompressed.
    fields : sequence of str, optional
        Fields to read (dotted paths for nested objects); builds a :class:`JSONDecoder`.
    decoder : Decoder, optional
        Use this decoder instead of ``fields`` (exactly one of the two must be given).
    missing : {"reject", "nan"}, default="reject"
        Passed to the :class:`JSONDecoder` built from ``fields``.
    carry : sequence of str, default=()
        Fields passed through as extra columns of every batch (event id, timestamp, ...), after
        ``source``, ``file``, ``line`` and ``offset``; passed to the :class:`JSONDecoder` built from
        ``fields`` (a given ``decoder`` is told what to carry itself).
    follow : bool, default=False
        Watch the last file for growth (and the glob for new files), following each path as
        ``tail -F`` does through rotation and truncation; never answer ``"end"``.
    name : str, optional
        The ``source`` field of the meta (default: ``paths`` as a string).
    poll_interval : float, default=0.05
        Seconds between checks for growth in follow mode.
    block_size : int, default=1048576
        Bytes read at a time.
    timeout : float, default=1.0
        Default ``timeout`` of :meth:`read`.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.jsonl")
    >>> _ = open(path, "w").write('{"x": 1, "y": 2}\\n{"x": "bad", "y": 0}\\n{"x": 3, "y": 4}')
    >>> src = JSONLinesSource(path, fields=["x", "y"])
    >>> b = src.read(100)
    >>> b.X
    array([[1., 2.],
           [3., 4.]])
    >>> b.rejects[0].reason, b.rejects[0].meta["line"]
    ("field 'x' is not a number: 'bad'", 2)
    >>> src.read(100).status
    'end'
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        fields: Sequence[str] | None = None,
        decoder: Decoder | None = None,
        missing: str = "reject",
        carry: Sequence[str] = (),
        follow: bool = False,
        name: str | None = None,
        poll_interval: float = 0.05,
        block_size: int = BLOCK_BYTES,
        timeout: float = 1.0,
    ) -> None:
        if (fields is None) == (decoder is None):
            raise ValueError(f"give exactly one of fields and decoder, got fields={fields!r}, decoder={decoder!r}")
        carry = _check_carry(carry)
        if decoder is not None and carry:
            raise ValueError(f"carry is for the decoder built from fields; give it to the decoder instead, got {carry!r}")
        if decoder is None:
            decoder = JSONDecoder(fields, missing=missing, carry=carry) if carry else JSONDecoder(fields, missing=missing)
        self.carry = carry
        self._decoder = decoder
        self.feature_names = list(self._decoder.feature_names)
        super().__init__(paths, follow=follow, name=name, poll_interval=poll_interval,
                         block_size=block_size, timeout=timeout)


class CSVSource(_LineSource):
    """CSV rows (one per line) from one file or a sorted glob of files.

    Parameters
    ----------
    paths : str, path or list of them
        A file, a glob pattern or a list of files/patterns; read in sorted order. ``.gz`` works.
    columns : sequence of str or int, optional
        Columns to read, by header name or 0-based index.  Default: every column of the header
        (requires ``header=True``).
    header : bool, default=True
        Whether the first line of every file is a header (then it is not a record; names in
        ``columns`` are resolved against each file's own header).
    delimiter, quotechar : str, default "," and '"'
        Single characters.  Quoted cells may not contain newlines (one record per line).
    missing : {"reject", "nan"}, default="reject"
        What an empty cell does; see :mod:`connectors.decoders`.
    carry : sequence of str or int, default=()
        Columns passed through as extra columns of every batch (by header name or index), after
        ``source``, ``file``, ``line`` and ``offset``; passed to the :class:`CSVDecoder`.
    follow, name, poll_interval, block_size, timeout
        As for :class:`JSONLinesSource`.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.csv")
    >>> _ = open(path, "w").write("id,x,y\\na,1,2\\nb,3,\\nc,5,6\\n")
    >>> b = CSVSource(path, columns=["x", "y"]).read(10)
    >>> b.X
    array([[1., 2.],
           [5., 6.]])
    >>> b.rejects[0].reason
    "column 'y' is empty"
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        columns: Sequence[str | int] | None = None,
        header: bool = True,
        delimiter: str = ",",
        quotechar: str = '"',
        missing: str = "reject",
        carry: Sequence[str | int] = (),
        follow: bool = False,
        name: str | None = None,
        poll_interval: float = 0.05,
        block_size: int = BLOCK_BYTES,
        timeout: float = 1.0,
    ) -> None:
        if not isinstance(header, bool):
            raise ValueError(f"header must be True or False, got {header!r}")
        if columns is None and not header:
            raise ValueError("columns must be given when header=False (there are no names to take them from)")
        if columns is not None and not header and any(isinstance(c, str) for c in columns):
            raise ValueError(f"columns must be int indices when header=False, got {columns!r}")
        self.columns = None if columns is None else list(columns)
        self.header = header
        self.carry = _check_carry(carry)
        self._template = dict(delimiter=delimiter, quotechar=quotechar, missing=missing)
        self._carry_kw: dict[str, Any] = {"carry": self.carry} if self.carry else {}
        probe = CSVDecoder(self.columns if not header else [0], **self._template,
                           **({} if header else self._carry_kw))  # validates the options
        self._decoder: CSVDecoder | None = None if header else probe
        self.feature_names: list[str] | None = None if header else list(probe.feature_names)
        super().__init__(paths, follow=follow, name=name, poll_interval=poll_interval,
                         block_size=block_size, timeout=timeout)

    def _on_open(self, fh: Any, offset: int) -> None:
        if not self.header:
            return
        self._decoder = None
        if offset == 0:
            self._header_pending = True
            return
        self._header_pending = False
        fh.seek(0)
        line = fh.readline()
        fh.seek(offset)
        if not line.endswith(b"\n") or len(line) > offset:
            raise PositionError(f"position offset {offset} in {self._path!r} is inside the header line")
        self._on_header(line[:-1], 1)

    def _on_header(self, line: bytes, lineno: int) -> None:
        try:
            cells = CSVDecoder([0], **self._template).split_row(line)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ConnectorError(f"cannot read the header line of {self._path!r}: {exc}") from exc
        cells = [c.strip() for c in cells]
        cols = self.columns if self.columns is not None else cells
        try:
            dec = CSVDecoder(cols, header=cells, **self._template, **self._carry_kw)
        except ValueError as exc:
            raise ConnectorError(f"header of {self._path!r} does not fit columns={cols!r}: {exc}") from exc
        if self.feature_names is not None and dec.feature_names != self.feature_names:
            raise ConnectorError(
                f"file {self._path!r} has columns {dec.feature_names!r}, expected {self.feature_names!r} "
                "as in the first file"
            )
        self.feature_names = list(dec.feature_names)
        self._decoder = dec

    def _take(self, need: int) -> tuple[list[bytes], np.ndarray, np.ndarray]:
        raws, offs, lnos = super()._take(need)
        if raws and self._decoder is None:  # pragma: no cover - header always precedes records
            raise ConnectorError(f"no header read in {self._path!r}")
        return raws, offs, lnos

    def _n_features(self) -> int:
        if self.feature_names is not None:
            return len(self.feature_names)
        return len(self.columns) if self.columns is not None else 0
