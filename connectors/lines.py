"""Line-oriented file sources: JSON Lines and CSV (one record per line); see :mod:`connectors.files`."""

from __future__ import annotations

import csv
import gzip
import os
import time
from itertools import accumulate, repeat
from operator import add
from typing import Any, Mapping, Sequence

import numpy as np

from connectors.base import Batch, ConnectorError, Position, PositionError, Reject, Source
from connectors.decoders import CSVDecoder, Decoder, JSONDecoder, shorten
from connectors._paths import BLOCK_BYTES, HEAD_BYTES, _check_max_records, _check_paths, _expand, _hash

__all__ = ["CSVSource", "JSONLinesSource"]

_POSITION_KEYS = {"path", "inode", "head_len", "head", "offset", "line", "records"}


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
