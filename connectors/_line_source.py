"""The machinery shared by the line-oriented file sources (one record per line).

:class:`_LineSource` reads one file or a sorted glob of files in blocks, cuts complete lines, hands
them to a decoder, builds the batch's position columns, and takes and resumes positions (byte offset,
line number, inode and a hash of the first bytes).  Follow mode (rotation, truncation) is the mixin
:class:`connectors._follow._Follower`; the concrete sources are in :mod:`connectors.lines`;
:mod:`connectors.files` states what is promised.
"""

from __future__ import annotations

import gzip
import os
import time
from typing import Any, Mapping

import numpy as np

from connectors._follow import _Follower
from connectors._paths import (
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
from connectors.decoders import shorten

_POSITION_KEYS = {"path", "inode", "head_len", "head", "offset", "line", "records"}
#: Keys a position may carry beyond :data:`_POSITION_KEYS` (absent from positions saved before them).
_OPTIONAL_KEYS = {"rotated"}
#: Columns every batch of a line source has, in this order; carried fields come after them.
_POSITION_COLUMNS = ("source", "file", "line", "offset")
_NO_INDEX = np.empty(0, dtype=np.int64)


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return _NO_INDEX
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class _LineSource(_Follower, Source):
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

    def close(self) -> None:
        """Close the current file; idempotent."""
        self._reset_file(None)
        self._closed = True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.paths!r}, follow={self.follow!r})"
