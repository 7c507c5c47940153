"""Line-oriented file sources: JSON Lines and CSV (one record per line); see :mod:`connectors.files`.

Both sources follow their paths as ``tail -F`` does in follow mode (:mod:`connectors._follow`, whose
:class:`TruncationWarning` and :class:`RotationWarning` are exported here); what they share, reading
files and taking and resuming positions, is :class:`connectors._line_source._LineSource`.
"""

from __future__ import annotations

import csv
import os
from typing import Any, Sequence

import numpy as np

from connectors._follow import RotationWarning, TruncationWarning
from connectors._line_source import _POSITION_COLUMNS, _LineSource
from connectors._paths import BLOCK_BYTES
from connectors.base import ConnectorError, PositionError
from connectors.decoders import CSVDecoder, Decoder, JSONDecoder

__all__ = ["CSVSource", "JSONLinesSource", "RotationWarning", "TruncationWarning"]


def _check_carry(carry: Any) -> tuple[Any, ...]:
    """``carry`` as a tuple; its names may not shadow the position columns."""
    if isinstance(carry, (str, bytes)) or not isinstance(carry, Sequence):
        raise TypeError(f"carry must be a sequence of field names, got {carry!r}")
    clash = [c for c in carry if (".".join(c) if isinstance(c, tuple) else c) in _POSITION_COLUMNS]
    if clash:
        raise ValueError(f"carry may not name the position columns {list(_POSITION_COLUMNS)!r}, got {clash!r}")
    return tuple(carry)


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
