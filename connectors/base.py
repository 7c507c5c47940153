"""Contracts shared by every connector: :class:`Batch`, :class:`Reject`, :class:`Source`, :class:`Sink`.

A :class:`Source` turns bytes into validated float arrays with positions.  It never blocks forever:
:meth:`Source.read` waits at most ``timeout`` seconds and answers with a :class:`Batch` whose
:attr:`Batch.status` says which of three things happened:

``"records"``
    at least one record (good or rejected) was consumed;
``"idle"``
    nothing yet: the source is alive but had nothing within the timeout (a Kafka topic, a followed file);
``"end"``
    finished: the source is exhausted and will never yield again (a finite file set).

Batches are columns
-------------------
A batch carries its good records as columns: ``X`` (the float matrix) and :attr:`Batch.columns`, a
dict of equal-length 1-D arrays (``source``, ``file``/``line``/``offset`` or ``topic``/``partition``/
``offset``, ``key``, and any pass-through fields a decoder was told to carry), built many records at a
time.  :attr:`Batch.meta` is the same information as one dict per record, built only when asked for.
Sinks receive columns through :meth:`Sink.write_columns`; columnar sinks encode a whole batch at once.

A position is plain JSON-serialisable data (dicts, lists, strings, numbers) that points at the **next**
record to read.  ``source.seek(source.position())`` is a no-op, and a new source seeked to a saved
position yields exactly the records the old one had not yet returned.

This package knows nothing of Gaussian mixtures and never imports ``online_gmm``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

__all__ = [
    "Batch",
    "Reject",
    "Source",
    "Sink",
    "ConnectorError",
    "PositionError",
    "Columns",
    "DictColumn",
    "columns_from_records",
    "constant_column",
    "concat_columns",
    "object_column",
    "records_from_columns",
    "take_columns",
]

#: JSON-serialisable position: nested dicts/lists of str, int, float, bool, None.
Position = Any


class ConnectorError(RuntimeError):
    """A connector cannot go on (configuration, I/O or broker failure)."""


class PositionError(ConnectorError):
    """A saved position cannot be honoured (file replaced, offset no longer in the broker's log, ...)."""


#: Equal-length columns: name -> 1-D array (or a 2-D array whose rows are list values, or a
#: :class:`DictColumn`).  Key order is the field order of the records they stand for.
Columns = dict


class DictColumn:
    """A column whose value in each record is a dict with the same keys (``{key: row[j]}``).

    Parameters
    ----------
    values : ndarray of shape (n_records, n_keys)
    keys : sequence of str, length n_keys
    """

    __slots__ = ("values", "keys")

    def __init__(self, values: np.ndarray, keys: Sequence[str]) -> None:
        values = np.asarray(values)
        if values.ndim != 2 or values.shape[1] != len(keys):
            raise ValueError(f"values must have shape (n, {len(keys)}), got {values.shape}")
        self.values = values
        self.keys = [str(k) for k in keys]

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def __getitem__(self, index: Any) -> "DictColumn":
        return DictColumn(self.values[index], self.keys)

    def tolist(self) -> list[dict[str, Any]]:
        """One dict per record (built in C: ``dict(zip(keys, row))`` mapped over the rows)."""
        return list(map(dict, map(zip, repeat(self.keys), self.values.tolist())))

    def __repr__(self) -> str:
        return f"DictColumn(keys={self.keys!r}, n={len(self)})"


def _column_len(col: Any) -> int:
    return len(col)


def object_column(values: Any, n: int | None = None) -> np.ndarray:
    """An object column holding each value of ``values`` as it is (a list stays one list value).

    ``np.fromiter`` with ``dtype=object``: 0.08 ms for 5000 values, where assigning a list to an
    object array's slice (``col[:] = values``) takes about 1 ms (numpy looks into every value for a
    nested sequence).

    >>> object_column([1, "a", [2, 3]])
    array([1, 'a', list([2, 3])], dtype=object)
    """
    if n is None:
        n = len(values)
    return np.fromiter(values, dtype=object, count=n)


def _as_column(values: Any) -> Any:
    if isinstance(values, (np.ndarray, DictColumn)):
        return values
    return object_column(list(values))


def _done() -> None:
    """The durable part of a flush that was already durable."""


def constant_column(value: Any, n: int) -> np.ndarray:
    """An object column of ``n`` times ``value`` (``np.full`` is ~10x slower for object arrays)."""
    col = np.empty(n, dtype=object)
    col.fill(value)
    return col


def columns_from_records(records: Sequence[Mapping[str, Any]]) -> Columns:
    """Columns (object arrays) from one dict per record; a key absent from a record gives ``None``.

    >>> columns_from_records([{"a": 1}, {"a": 2, "b": "x"}])["b"].tolist()
    [None, 'x']
    """
    keys: dict[str, None] = {}
    for r in records:
        keys.update(dict.fromkeys(r))
    return {k: _as_column([r.get(k) for r in records]) for k in keys}


def records_from_columns(columns: Mapping[str, Any], n: int | None = None) -> list[dict[str, Any]]:
    """One dict per record from columns (the inverse of :func:`columns_from_records`).

    A 2-D array gives a list per record, a :class:`DictColumn` a dict; numpy scalars become Python
    values.

    >>> records_from_columns({"a": np.array([1, 2]), "x": np.array([[0.5], [1.5]])})
    [{'a': 1, 'x': [0.5]}, {'a': 2, 'x': [1.5]}]
    """
    if not columns:
        return [{} for _ in range(n or 0)]
    keys = list(columns)
    lists = [columns[k].tolist() for k in keys]
    return list(map(dict, map(zip, repeat(keys), zip(*lists))))


def take_columns(columns: Mapping[str, Any], index: Any) -> Columns:
    """The same rows of every column (``index``: a boolean mask, a slice or integer indices)."""
    return {k: v[index] for k, v in columns.items()}


def concat_columns(parts: Sequence[Mapping[str, Any]], lengths: Sequence[int]) -> Columns:
    """Concatenate column dicts of ``lengths`` rows each; a column absent from a part gives ``None``."""
    if len(parts) == 1:
        return dict(parts[0])
    keys: dict[str, None] = {}
    for p in parts:
        keys.update(dict.fromkeys(p))
    out: Columns = {}
    for k in keys:
        cols = [p[k] if k in p else constant_column(None, n) for p, n in zip(parts, lengths)]
        if all(isinstance(c, DictColumn) for c in cols) and len({tuple(c.keys) for c in cols}) == 1:
            out[k] = DictColumn(np.concatenate([c.values for c in cols]), cols[0].keys)
        elif any(isinstance(c, DictColumn) for c in cols):
            out[k] = _as_column([v for c in cols for v in c.tolist()])
        else:
            out[k] = np.concatenate(cols) if len({c.ndim for c in cols}) == 1 else \
                _as_column([v for c in cols for v in c.tolist()])
    return out


@dataclass(frozen=True)
class Reject:
    """One record that could not become a finite vector of the expected dimension.

    Attributes
    ----------
    reason : str
        Human-readable cause, e.g. ``"field 'x.y' is not a number: 'abc'"``.
    raw : bytes
        The record's raw bytes (possibly shortened by the decoder to a bounded length).
    meta : dict
        Where it came from: ``source`` name plus file/line/offset or topic/partition/offset.
    """

    reason: str
    raw: bytes
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """A JSON-serialisable dict for dead-letter sinks (``raw`` decoded as UTF-8 with replacement)."""
        return {
            "reason": self.reason,
            "raw": self.raw.decode("utf-8", errors="replace"),
            **{k: v for k, v in self.meta.items()},
        }


class Batch:
    """The answer of :meth:`Source.read`.

    Parameters
    ----------
    X : ndarray of shape (n_good, n_features), float64
        The good records, every value finite (or NaN only where a decoder was explicitly told to pass
        missing fields on as NaN).
    meta : dict of columns, or list of dict
        Per good record: ``source`` and its position (``file``/``line``/``offset`` or
        ``topic``/``partition``/``offset``), ``key`` where the transport has one, and any carried
        fields: as :data:`Columns` (each of length n_good; what sources build) or as one dict per
        record.
    rejects : list of Reject
        The records of this batch that were rejected, with reasons.
    position : Position
        Where the source stands **after** this batch (JSON-serialisable).
    status : {"records", "idle", "end"}
        See the module docstring.

    Attributes
    ----------
    columns : dict of str to ndarray
        The per-record information as columns of length n_good.
    meta : list of dict
        The same, one dict per record (built on first access).
    """

    __slots__ = ("X", "rejects", "position", "status", "_columns", "_meta")

    def __init__(self, X: np.ndarray, meta: Any, rejects: list[Reject], position: Position,
                 status: str = "records") -> None:
        if status not in ("records", "idle", "end"):
            raise ValueError(f"status must be 'records', 'idle' or 'end', got {status!r}")
        self.X, self.rejects, self.position, self.status = X, rejects, position, status
        if isinstance(meta, Mapping):
            self._columns, self._meta = dict(meta), None
            lengths = {_column_len(c) for c in self._columns.values()}
            n_meta = lengths.pop() if len(lengths) == 1 else (X.shape[0] if not lengths else -1)
        else:
            self._columns, self._meta = None, list(meta)
            n_meta = len(self._meta)
        if X.ndim != 2 or X.shape[0] != n_meta:
            raise ValueError(
                f"X must be 2-D with one row per record of meta; got X.shape={X.shape} "
                f"and meta for {n_meta} records"
            )

    @property
    def columns(self) -> Columns:
        if self._columns is None:
            self._columns = columns_from_records(self._meta)
        return self._columns

    @property
    def meta(self) -> list[dict[str, Any]]:
        if self._meta is None:
            self._meta = records_from_columns(self._columns, self.X.shape[0])
        return self._meta

    @property
    def n_records(self) -> int:
        """Number of records consumed (good plus rejected)."""
        return int(self.X.shape[0]) + len(self.rejects)

    def __len__(self) -> int:
        return self.n_records

    def __repr__(self) -> str:
        return (f"Batch(n_good={self.X.shape[0]}, n_rejected={len(self.rejects)}, "
                f"status={self.status!r}, position={self.position!r})")


class Source(abc.ABC):
    """A resumable stream of records decoded into float vectors.

    Subclasses implement :meth:`read`, :meth:`position`, :meth:`seek` and :meth:`close`.
    Sources are context managers and iterables (iteration yields non-empty batches until ``"end"``;
    for a source that never ends, iteration never ends either).
    """

    #: Default number of records per batch when iterating.
    batch_size: int = 1000
    #: Default timeout in seconds per read when iterating.
    timeout: float = 1.0
    #: Whether :meth:`commit` may be called (False for a Kafka source without a group: its
    #: positions live only in the caller's checkpoints).
    commits: bool = True

    @abc.abstractmethod
    def read(self, max_records: int, timeout: float | None = None) -> Batch:
        """Return the next batch of at most ``max_records`` records (good plus rejected).

        Waits at most ``timeout`` seconds (``None``: the source's default) for the first record.
        """

    @abc.abstractmethod
    def position(self) -> Position:
        """A JSON-serialisable snapshot pointing at the next record to read."""

    @abc.abstractmethod
    def seek(self, position: Position) -> None:
        """Resume from a position returned by :meth:`position` (or :attr:`Batch.position`)."""

    def commit(self, position: Position | None = None) -> None:
        """Acknowledge everything up to ``position`` (default: the current one) to the transport.

        Only meaningful for transports with server-side offsets (Kafka); a no-op otherwise.
        Call it only after the state built from those records is durably checkpointed.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release files, sockets and threads. Idempotent."""

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Batch]:
        while True:
            batch = self.read(self.batch_size, self.timeout)
            if batch.n_records:
                yield batch
            if batch.status == "end":
                return


class Sink(abc.ABC):
    """A destination for output records (dicts of JSON-serialisable values)."""

    @abc.abstractmethod
    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Queue records for output (they may be buffered until :meth:`flush`)."""

    def write_columns(self, columns: Mapping[str, Any]) -> None:
        """Queue the records that ``columns`` stand for (one record per row, fields in key order).

        Parameters
        ----------
        columns : dict of str to array
            Equal-length columns: 1-D arrays (one value per record), 2-D arrays (a list per record)
            or :class:`DictColumn` (a dict per record).  Columnar sinks encode them in one pass; the
            default builds one dict per record and calls :meth:`write`.
        """
        self.write(records_from_columns(columns))

    @abc.abstractmethod
    def flush(self) -> None:
        """Make everything written so far durable (fsync for files, acknowledged for Kafka).

        Raises :class:`ConnectorError` if any record could not be delivered.
        """

    def flush_async(self) -> Callable[[], None]:
        """Start a flush whose durable part may run on another thread: returns that part.

        After the call, :meth:`position` is the position that will be durable once the returned
        callable has run (on any thread; it raises :class:`ConnectorError` like :meth:`flush`).
        Until then the caller must not rely on it: a pipeline writes its checkpoint only after the
        callable returned, and keeps writing records meanwhile. The default flushes here and
        returns a no-op; file sinks hand the fsync over.
        """
        self.flush()
        return _done

    def position(self) -> Position:
        """A JSON-serialisable snapshot of how much has been durably written (``None`` if untracked)."""
        return None

    def restore(self, position: Position) -> None:
        """On resume: discard whatever was written after ``position`` (file sinks truncate).

        Sinks that cannot discard (Kafka) leave de-duplication to their readers, who key on the
        ``source``/``partition``/``offset`` fields of each record.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release resources. Idempotent."""

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
