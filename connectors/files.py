"""File sources (CSV, JSON Lines, Parquet) and file sinks (JSON Lines, CSV).

Sources
-------
A source reads one file or a glob of files, always in sorted path order.  A position is a dict::

    {"path": ..., "inode": ..., "head_len": ..., "head": ..., "offset": ..., "line": ..., "records": ...}

``offset`` is the byte offset of the next line (decompressed offset for ``.gz`` files), ``line`` the
number of lines of that file already consumed, ``records`` the number of records (good plus rejected)
consumed since the start of the stream.  ``inode`` and a hash of the first ``head_len`` bytes (at most
4 KiB, never beyond ``offset``) identify the file: appending to a file keeps both, while replacing it
(new inode) or rewriting it (different head) makes :meth:`seek` raise :class:`PositionError`, as does a
file that vanished or got shorter than ``offset``.

Lines and records
-----------------
One record per line.  Empty and whitespace-only lines are skipped (they count in line numbers).
A line is consumed only once its newline has been written, **except** at the true end of a finished
file: without ``follow=True`` (or for a file followed by a later file of the glob, i.e. rotated) a
last line without trailing newline is a complete record; if it was cut mid-JSON it is rejected like
any malformed record.  With ``follow=True`` the last file is watched for growth: an unterminated last
line waits until its newline arrives, and :meth:`read` answers ``"idle"`` (never ``"end"``) when
nothing new came within the timeout; new files that sort after the current one are picked up.
Gzip files (``.gz``) are read as complete files (they are not followed); seeking in them re-reads
from the start.

Meta of every record (good or rejected): ``{"source": name, "file": path, "line": n, "offset": b}``
with ``n`` the 1-based line number and ``b`` the byte offset of the line.

Sinks
-----
:class:`JSONLinesSink` and :class:`CSVSink` append to a file; ``flush()`` flushes and fsyncs;
``position()`` is ``{"path": ..., "size": durable_size}``; ``restore(position)`` truncates the file
back to that size, so a pipeline resumed from a checkpoint leaves no duplicates.  Non-finite floats
are written as JSON ``null`` (CSV: an empty cell), so the output is always valid JSON.
"""

from __future__ import annotations

import csv
import glob as _glob
import gzip
import hashlib
import io
import json
import math
import os
import time
from itertools import accumulate, repeat
from operator import add
from typing import Any, Mapping, Sequence

import numpy as np

from connectors.base import Batch, ConnectorError, Position, PositionError, Reject, Sink, Source
from connectors.decoders import CSVDecoder, Decoder, JSONDecoder, shorten

__all__ = [
    "CSVSource",
    "JSONLinesSource",
    "ParquetSource",
    "JSONLinesSink",
    "CSVSink",
    "to_json_line",
]

HEAD_BYTES = 4096
BLOCK_BYTES = 1 << 20
_POSITION_KEYS = {"path", "inode", "head_len", "head", "offset", "line", "records"}


def _hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _expand(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Sorted, de-duplicated list of the files matching ``paths`` (patterns are globbed)."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found: set[str] = set()
    for p in items:
        p = os.fspath(p)
        if _glob.has_magic(p):
            found.update(f for f in _glob.glob(p) if os.path.isfile(f))
        elif os.path.isfile(p):
            found.add(p)
    return sorted(found)


def _check_paths(paths: Any) -> None:
    items = [paths] if isinstance(paths, (str, os.PathLike)) else paths
    if not isinstance(items, Sequence) or len(items) == 0 or not all(
        isinstance(p, (str, os.PathLike)) for p in items
    ):
        raise TypeError(f"paths must be a path, a glob pattern or a list of them, got {paths!r}")


def _check_max_records(max_records: Any) -> int:
    if isinstance(max_records, bool) or not isinstance(max_records, (int, np.integer)) or max_records < 1:
        raise ValueError(f"max_records must be a positive int, got {max_records!r}")
    return int(max_records)


class _LineSource(Source):
    """Shared machinery of the line-oriented sources (one record per line)."""

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
        self._head = b""
        self._head_cache: tuple[int, str] = (-1, "")

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
        """Read one more block into the line buffer; False if nothing new could be read."""
        if self._fh is None or self._eof:
            return False
        data = self._fh.read(self.block_size)
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

    def _take(self, need: int) -> tuple[list[bytes], list[int], list[int]]:
        """Up to ``need`` non-blank complete lines of the current file, with offsets and line numbers."""
        raws: list[bytes] = []
        offs: list[int] = []
        lnos: list[int] = []
        while len(raws) < need:
            if self._k >= len(self._lines):
                if not self._fill():
                    break
                continue
            lines, k, off, ln = self._lines, self._k, self._offset, self._line
            stop = len(lines)
            want = need - len(raws)
            chunk = lines[k: k + want]
            if self._header_pending or b"" in chunk or any(map(bytes.isspace, chunk)):
                while k < stop and len(raws) < need:
                    line = lines[k]
                    k += 1
                    ln += 1
                    if self._header_pending:
                        self._header_pending = False
                        self._on_header(line, ln)
                    elif line and not line.isspace():
                        raws.append(line)
                        offs.append(off)
                        lnos.append(ln)
                    off += len(line) + 1
            else:  # the common case: no blank line, no header
                raws += chunk
                lnos += range(ln + 1, ln + 1 + len(chunk))
                starts = list(accumulate(map(add, map(len, chunk), repeat(1)), initial=off))
                off = starts.pop()
                offs += starts
                k += len(chunk)
                ln += len(chunk)
            if self._last_no_newline and k >= stop:
                off -= 1
                self._last_no_newline = False
            self._k, self._offset, self._line = k, off, ln
        return raws, offs, lnos

    _header_pending = False

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
            nxt = self._next_file()
            if nxt is None:
                return False
            self._open(nxt, 0, 0)
            return True
        nxt = self._next_file()
        if self.follow and nxt is None and not self._gz:
            return False  # the last followed file: wait for growth
        # finished file (or rotated away): its last line is complete as it stands
        self._finish_file()
        self._eof = True
        return bool(self._lines[self._k:]) or nxt is not None

    # -- Source API -------------------------------------------------------------------------------
    def _decoder_for_file(self) -> Decoder:
        raise NotImplementedError

    def read(self, max_records: int, timeout: float | None = None) -> Batch:
        """Next batch of at most ``max_records`` records (good plus rejected); see :meth:`Source.read`.

        Waits at most ``timeout`` seconds (default: the ``timeout`` given at construction) for new data
        in follow mode; stops early (with what it has) once ``timeout`` has passed.

        Returns
        -------
        Batch
            ``X`` of shape (n_good, n_features); status ``"records"``, ``"idle"`` (follow mode) or
            ``"end"``.
        """
        if self._closed:
            raise ConnectorError(f"source {self.name!r} is closed")
        need = _check_max_records(max_records)
        wait = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + max(wait, 0.0)
        Xs: list[np.ndarray] = []
        meta: list[dict[str, Any]] = []
        rejects: list[Reject] = []
        n = 0
        ended = False
        while n < need:
            raws, offs, lnos = self._take(need - n) if self._fh is not None else ([], [], [])
            if raws:
                n += len(raws)
                self._records += len(raws)
                X, good, bad = self._decoder.decode_many(raws)
                src, path = self.name, self._path
                Xs.append(X)
                if len(good) == len(raws):
                    meta += [{"source": src, "file": path, "line": ln, "offset": of} for ln, of in zip(lnos, offs)]
                else:
                    meta += [{"source": src, "file": path, "line": lnos[j], "offset": offs[j]} for j in good]
                for j, reason in bad:
                    rejects.append(
                        Reject(reason, raws[j], {"source": src, "file": path, "line": lnos[j], "offset": offs[j]})
                    )
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
        status = "records" if n else ("end" if ended else "idle")
        return Batch(X, meta, rejects, self.position(), status)

    def _n_features(self) -> int:
        nf = getattr(getattr(self, "_decoder", None), "n_features", None)
        return int(nf) if nf is not None else 0

    def position(self) -> Position:
        """JSON-serialisable position of the next record; see the module docstring."""
        if self._path is None:
            return {"path": None, "inode": 0, "head_len": 0, "head": _hash(b""), "offset": 0,
                    "line": 0, "records": self._records}
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
        }

    def seek(self, position: Position) -> None:
        """Resume exactly at ``position`` (from :meth:`position` or :attr:`Batch.position`).

        Raises
        ------
        PositionError
            If the position is malformed, its file is not among this source's files any more, was
            replaced (other inode, other first bytes) or is shorter than the position's offset.
        """
        if not isinstance(position, Mapping) or set(position) != _POSITION_KEYS:
            raise PositionError(
                f"position must be a dict with keys {sorted(_POSITION_KEYS)}, got {shorten(position, 200)}"
            )
        path = position["path"]
        self._files = _expand(self.paths)
        self._records = int(position["records"])
        if path is None:
            self._reset_file(None)
            if self._files:
                self._open(self._files[0], 0, 0)
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
    follow : bool, default=False
        Watch the last file for growth (and the glob for new files); never answer ``"end"``.
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
        follow: bool = False,
        name: str | None = None,
        poll_interval: float = 0.05,
        block_size: int = BLOCK_BYTES,
        timeout: float = 1.0,
    ) -> None:
        if (fields is None) == (decoder is None):
            raise ValueError(f"give exactly one of fields and decoder, got fields={fields!r}, decoder={decoder!r}")
        self._decoder = decoder if decoder is not None else JSONDecoder(fields, missing=missing)
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
        self._template = dict(delimiter=delimiter, quotechar=quotechar, missing=missing)
        probe = CSVDecoder(self.columns if not header else [0], **self._template)  # validates the options
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
            dec = CSVDecoder(cols, header=cells, **self._template)
        except ValueError as exc:
            raise ConnectorError(f"header of {self._path!r} does not fit columns={cols!r}: {exc}") from exc
        if self.feature_names is not None and dec.feature_names != self.feature_names:
            raise ConnectorError(
                f"file {self._path!r} has columns {dec.feature_names!r}, expected {self.feature_names!r} "
                "as in the first file"
            )
        self.feature_names = list(dec.feature_names)
        self._decoder = dec

    def _take(self, need: int) -> tuple[list[bytes], list[int], list[int]]:
        raws, offs, lnos = super()._take(need)
        if raws and self._decoder is None:  # pragma: no cover - header always precedes records
            raise ConnectorError(f"no header read in {self._path!r}")
        return raws, offs, lnos

    def _n_features(self) -> int:
        if self.feature_names is not None:
            return len(self.feature_names)
        return len(self.columns) if self.columns is not None else 0


class ParquetSource(Source):
    """Rows of Parquet files (needs the optional ``pyarrow`` dependency: ``pip install online-gmm[parquet]``).

    Parameters
    ----------
    paths : str, path or list of them
        A file, a glob pattern or a list of files/patterns; read in sorted order.
    columns : sequence of str
        Numeric columns to read, one per feature (a non-numeric or absent column raises
        :class:`ConnectorError` when its file is opened).
    missing : {"reject", "nan"}, default="reject"
        What a null does; NaN and infinite values are always rejected.
    name : str, optional
        The ``source`` field of the meta.

    Notes
    -----
    Position: ``{"path", "inode", "size", "tail", "row_group", "row", "records"}`` where ``row`` is the
    row within ``row_group`` and ``tail`` hashes the file's last bytes (its footer).  Meta of a record:
    ``{"source", "file", "row_group", "row"}`` with ``row`` the 0-based row index within the file.
    Rejected rows carry their values as a JSON object in ``Reject.raw``.
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        columns: Sequence[str],
        missing: str = "reject",
        name: str | None = None,
        timeout: float = 1.0,
    ) -> None:
        _check_paths(paths)
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "ParquetSource needs pyarrow; install it with `pip install online-gmm[parquet]` "
                "(or `pip install pyarrow`)"
            ) from exc
        if isinstance(columns, str) or not isinstance(columns, Sequence) or not columns or not all(
            isinstance(c, str) for c in columns
        ):
            raise ValueError(f"columns must be a non-empty list of column names, got {columns!r}")
        if missing not in ("reject", "nan"):
            raise ValueError(f"missing must be one of ('reject', 'nan'), got {missing!r}")
        self.paths = paths
        self.columns = list(columns)
        self.feature_names = list(columns)
        self.missing = missing
        self.name = str(name) if name is not None else (
            os.fspath(paths) if isinstance(paths, (str, os.PathLike)) else ",".join(map(os.fspath, paths))
        )
        self.timeout = float(timeout)
        self._files = _expand(paths)
        if not self._files:
            raise ConnectorError(f"paths matched no file: {paths!r}")
        self._records = 0
        self._pf: Any = None
        self._closed = False
        self._open(0, 0, 0)

    def _identity(self, path: str) -> tuple[int, int, str]:
        st = os.stat(path)
        with open(path, "rb") as fh:
            fh.seek(max(0, st.st_size - HEAD_BYTES))
            tail = fh.read()
        return st.st_ino, st.st_size, _hash(tail)

    def _open(self, index: int, row_group: int, row: int) -> None:
        import pyarrow.parquet as pq

        self._i = index
        self._path = self._files[index]
        self._ino, self._size, self._tail = self._identity(self._path)
        try:
            self._pf = pq.ParquetFile(self._path)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
            raise ConnectorError(f"cannot read Parquet file {self._path!r}: {exc}") from exc
        names = self._pf.schema_arrow.names
        absent = [c for c in self.columns if c not in names]
        if absent and self.missing == "reject":
            raise ConnectorError(f"Parquet file {self._path!r} lacks columns {absent!r}; it has {names!r}")
        self._present = [c for c in self.columns if c in names]
        md = self._pf.metadata
        self._group_rows = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
        if row_group > len(self._group_rows) or (
            row_group < len(self._group_rows) and row > self._group_rows[row_group]
        ) or (row_group == len(self._group_rows) and row != 0):
            raise PositionError(
                f"position row_group={row_group}, row={row} is beyond {self._path!r} "
                f"({len(self._group_rows)} row groups)"
            )
        self._rg, self._row = row_group, row
        self._X: np.ndarray | None = None

    def _load_group(self) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        table = self._pf.read_row_group(self._rg, columns=self._present)
        n = table.num_rows
        X = np.full((n, len(self.columns)), np.nan)
        nulls = np.zeros((n, len(self.columns)), dtype=bool)
        for j, c in enumerate(self.columns):
            if c not in self._present:
                nulls[:, j] = True
                continue
            col = table.column(c)
            t = col.type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
                raise ConnectorError(
                    f"column {c!r} of {self._path!r} must be numeric, got type {t} "
                    "(booleans and strings are not numbers)"
                )
            nulls[:, j] = pc.is_null(col).to_numpy(zero_copy_only=False)
            X[:, j] = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        self._X, self._nulls = X, nulls
        self._row_base = sum(self._group_rows[: self._rg])

    def read(self, max_records: int, timeout: float | None = None) -> Batch:
        """Next batch of at most ``max_records`` rows; see :meth:`Source.read`.

        Returns
        -------
        Batch
            ``X`` of shape (n_good, n_features); status ``"records"`` or ``"end"``.
        """
        if self._closed:
            raise ConnectorError(f"source {self.name!r} is closed")
        need = _check_max_records(max_records)
        Xs, meta, rejects = [], [], []
        n = 0
        while n < need:
            if self._rg >= len(self._group_rows):
                if self._i + 1 >= len(self._files):
                    break
                self._open(self._i + 1, 0, 0)
                continue
            if self._row >= self._group_rows[self._rg]:
                self._rg, self._row, self._X = self._rg + 1, 0, None
                continue
            if self._X is None:
                self._load_group()
            a, b = self._row, min(self._group_rows[self._rg], self._row + need - n)
            X, nulls = self._X[a:b], self._nulls[a:b]
            finite = np.isfinite(X)
            ok = (finite | nulls).all(axis=1) if self.missing == "nan" else finite.all(axis=1)
            base = self._row_base + a
            for r in np.flatnonzero(ok):
                meta.append({"source": self.name, "file": self._path, "row_group": self._rg, "row": base + int(r)})
            for r in np.flatnonzero(~ok):
                j = int(np.flatnonzero(~(finite[r] | (nulls[r] & (self.missing == "nan"))))[0])
                what = "null" if nulls[r, j] else f"not finite: {float(X[r, j])!r}"
                values = {c: (None if nulls[r, k] else float(X[r, k])) for k, c in enumerate(self.columns)}
                raw = json.dumps(values, allow_nan=True).encode()
                rejects.append(Reject(
                    f"column {self.columns[j]!r} is {what}", raw,
                    {"source": self.name, "file": self._path, "row_group": self._rg, "row": base + int(r)},
                ))
            Xs.append(X[ok].copy())
            n += b - a
            self._row = b
        self._records += n
        X = np.concatenate(Xs) if Xs else np.empty((0, len(self.columns)))
        status = "records" if n else "end"
        return Batch(X, meta, rejects, self.position(), status)

    def position(self) -> Position:
        """``{"path", "inode", "size", "tail", "row_group", "row", "records"}`` of the next row."""
        return {"path": self._path, "inode": self._ino, "size": self._size, "tail": self._tail,
                "row_group": self._rg, "row": self._row, "records": self._records}

    def seek(self, position: Position) -> None:
        """Resume exactly at ``position``; PositionError if its file vanished or was replaced."""
        keys = {"path", "inode", "size", "tail", "row_group", "row", "records"}
        if not isinstance(position, Mapping) or set(position) != keys:
            raise PositionError(f"position must be a dict with keys {sorted(keys)}, got {shorten(position, 200)}")
        self._files = _expand(self.paths)
        path = position["path"]
        if path not in self._files:
            raise PositionError(f"file {path!r} of the position does not exist any more (or is not in {self.paths!r})")
        if self._identity(path) != (position["inode"], position["size"], position["tail"]):
            raise PositionError(f"file {path!r} was replaced since the position was taken (inode, size or footer differ)")
        self._open(self._files.index(path), int(position["row_group"]), int(position["row"]))
        self._records = int(position["records"])

    def close(self) -> None:
        """Release the file; idempotent."""
        self._pf = None
        self._X = None
        self._closed = True


# ------------------------------------------------------------------------------------------------
# Sinks


def _jsonable(value: Any) -> Any:
    """``value`` with numpy types made plain and non-finite floats replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def to_json_line(record: Mapping[str, Any]) -> bytes:
    """One record as a line of strict JSON (``\\n`` included); NaN and infinities become ``null``.

    >>> to_json_line({"score": float("nan"), "x": [1.0, float("inf")]})
    b'{"score": null, "x": [1.0, null]}\\n'
    """
    if not isinstance(record, Mapping):
        raise TypeError(f"records must be mappings, got {type(record).__name__}: {shorten(record)}")
    try:
        text = json.dumps(record, allow_nan=False, ensure_ascii=False)
    except (ValueError, TypeError):
        try:
            text = json.dumps(_jsonable(record), allow_nan=False, ensure_ascii=False)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"record is not JSON-serialisable ({exc}): {shorten(record)}") from exc
    return text.encode("utf-8") + b"\n"


class _FileSink(Sink):
    """Append-only file with fsync'd flush, durable-size position and truncating restore."""

    def __init__(self, path: str | os.PathLike) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or path, got {path!r}")
        self.path = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        self._fh = open(self.path, "ab")  # noqa: SIM115
        self._durable = self._fh.tell()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectorError(f"sink {self.path!r} is closed")

    def flush(self) -> None:
        """Flush and fsync: everything written so far is durable."""
        self._check_open()
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise ConnectorError(f"cannot flush {self.path!r}: {exc}") from exc
        self._durable = self._fh.tell()

    def position(self) -> Position:
        """``{"path": path, "size": durable_size}``: the size as of the last :meth:`flush`."""
        return {"path": self.path, "size": self._durable}

    def restore(self, position: Position) -> None:
        """Truncate the file back to ``position["size"]`` (discarding anything written after it).

        ``None`` (no position was ever saved) is a no-op.
        """
        self._check_open()
        if position is None:
            return
        if not isinstance(position, Mapping) or set(position) != {"path", "size"}:
            raise PositionError(f"position must be a dict with keys ['path', 'size'], got {shorten(position, 200)}")
        size = position["size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise PositionError(f"position['size'] must be a non-negative int, got {size!r}")
        if os.path.abspath(position["path"]) != os.path.abspath(self.path):
            raise PositionError(f"position is for {position['path']!r}, this sink writes {self.path!r}")
        self._fh.flush()
        current = os.fstat(self._fh.fileno()).st_size
        if size > current:
            raise PositionError(
                f"cannot restore {self.path!r} to {size} bytes: it has only {current} (data was lost)"
            )
        self._fh.truncate(size)
        self._fh.seek(0, os.SEEK_END)
        os.fsync(self._fh.fileno())
        self._durable = size

    def close(self) -> None:
        """Flush (with fsync) and close; idempotent."""
        if not self._closed:
            self.flush()
            self._fh.close()
            self._closed = True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"


class JSONLinesSink(_FileSink):
    """Append records as JSON Lines (strict JSON: NaN/inf become ``null``).

    Parameters
    ----------
    path : str or path
        Created (with its directory) if absent; appended to otherwise.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "out.jsonl")
    >>> with JSONLinesSink(path) as sink:
    ...     sink.write([{"score": 1.5}, {"score": float("nan")}])
    >>> open(path).read()
    '{"score": 1.5}\\n{"score": null}\\n'
    """

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append records (buffered until :meth:`flush`)."""
        self._check_open()
        self._fh.write(b"".join(to_json_line(r) for r in records))


class CSVSink(_FileSink):
    """Append records as CSV rows with the given fields as columns.

    Parameters
    ----------
    path : str or path
        Created if absent (a header row is written into an empty file); appended to otherwise.
    fields : sequence of str
        Column order; absent keys and None / NaN / inf values give an empty cell, other keys are ignored.
    delimiter : str, default=","

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "out.csv")
    >>> with CSVSink(path, ["id", "score"]) as sink:
    ...     sink.write([{"id": "a", "score": 0.5}, {"id": "b", "score": float("inf")}])
    >>> open(path).read()
    'id,score\\na,0.5\\nb,\\n'
    """

    def __init__(self, path: str | os.PathLike, fields: Sequence[str], *, delimiter: str = ",") -> None:
        if isinstance(fields, str) or not isinstance(fields, Sequence) or not fields or not all(
            isinstance(f, str) for f in fields
        ):
            raise ValueError(f"fields must be a non-empty list of str, got {fields!r}")
        if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '\r\n"':
            raise ValueError(f"delimiter must be one character other than a quote or newline, got {delimiter!r}")
        self.fields = list(fields)
        self.delimiter = delimiter
        super().__init__(path)
        if self._durable == 0:
            self._write_rows([self.fields])
            self.flush()

    def _write_rows(self, rows: list[list[Any]]) -> None:
        buf = io.StringIO()
        csv.writer(buf, delimiter=self.delimiter, lineterminator="\n").writerows(rows)
        self._fh.write(buf.getvalue().encode("utf-8"))

    @staticmethod
    def _cell(v: Any) -> Any:
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return ""
        if isinstance(v, (dict, list, tuple)):
            return json.dumps(_jsonable(v), allow_nan=False)
        return v

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append records (buffered until :meth:`flush`)."""
        self._check_open()
        if self._fh.tell() == 0:  # restored to an empty file: the header goes first again
            self._write_rows([self.fields])
        self._write_rows([[self._cell(r.get(f)) for f in self.fields] for r in records])

