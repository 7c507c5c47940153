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

A position is plain JSON-serialisable data (dicts, lists, strings, numbers) that points at the **next**
record to read.  ``source.seek(source.position())`` is a no-op, and a new source seeked to a saved
position yields exactly the records the old one had not yet returned.

This package knows nothing of Gaussian mixtures and never imports ``online_gmm``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

__all__ = ["Batch", "Reject", "Source", "Sink", "ConnectorError", "PositionError"]

#: JSON-serialisable position: nested dicts/lists of str, int, float, bool, None.
Position = Any


class ConnectorError(RuntimeError):
    """A connector cannot go on (configuration, I/O or broker failure)."""


class PositionError(ConnectorError):
    """A saved position cannot be honoured (file replaced, offset no longer in the broker's log, ...)."""


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


@dataclass
class Batch:
    """The answer of :meth:`Source.read`.

    Attributes
    ----------
    X : ndarray of shape (n_good, n_features), float64
        The good records, every value finite (or NaN only where a decoder was explicitly told to pass
        missing fields on as NaN).
    meta : list of dict, length n_good
        Per good record: ``source`` and its position (``file``/``line``/``offset`` or
        ``topic``/``partition``/``offset``), and ``key`` where the transport has one.
    rejects : list of Reject
        The records of this batch that were rejected, with reasons.
    position : Position
        Where the source stands **after** this batch (JSON-serialisable).
    status : {"records", "idle", "end"}
        See the module docstring.
    """

    X: np.ndarray
    meta: list[dict[str, Any]]
    rejects: list[Reject]
    position: Position
    status: str = "records"

    def __post_init__(self) -> None:
        if self.status not in ("records", "idle", "end"):
            raise ValueError(f"status must be 'records', 'idle' or 'end', got {self.status!r}")
        if self.X.ndim != 2 or self.X.shape[0] != len(self.meta):
            raise ValueError(
                f"X must be 2-D with one row per meta entry; got X.shape={self.X.shape} "
                f"and {len(self.meta)} meta entries"
            )

    @property
    def n_records(self) -> int:
        """Number of records consumed (good plus rejected)."""
        return int(self.X.shape[0]) + len(self.rejects)

    def __len__(self) -> int:
        return self.n_records


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

    @abc.abstractmethod
    def flush(self) -> None:
        """Make everything written so far durable (fsync for files, acknowledged for Kafka).

        Raises :class:`ConnectorError` if any record could not be delivered.
        """

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
