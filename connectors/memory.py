"""In-memory source and sink, for tests and examples.

Examples
--------
>>> import numpy as np
>>> src = MemorySource(np.array([[0.0, 1.0], [2.0, np.nan], [4.0, 5.0]]))
>>> batch = src.read(10)
>>> batch.X
array([[0., 1.],
       [4., 5.]])
>>> batch.rejects[0].reason, batch.position
("feature 'x1' is not finite: nan", 3)
>>> src.read(10).status
'end'
>>> sink = MemorySink()
>>> sink.write([{"score": 1.5}]); sink.flush(); sink.position()
1
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Mapping, Sequence

import numpy as np

from connectors.base import Batch, Position, PositionError, Reject, Sink, Source
from connectors._validate import _split_nonfinite
from connectors.decoders import Decoder

__all__ = ["MemorySource", "MemorySink"]


class MemorySource(Source):
    """A source over a list of raw records (decoded by ``decoder``) or a 2-D float array.

    Parameters
    ----------
    records : sequence of bytes, or array-like of shape (n_records, n_features)
        Raw records (then ``decoder`` is required) or ready-made rows (then ``decoder`` must be None;
        rows with a non-finite value are rejected).  The data are copied.
    decoder : Decoder, optional
        Turns raw records into rows.
    name : str, default="memory"
        The ``source`` field of every record's meta.
    endless : bool, default=False
        If True the source never ends: once drained, :meth:`read` waits up to ``timeout`` for
        :meth:`append` and answers ``"idle"``, like a quiet Kafka topic.
    timeout : float, default=0.0
        Default wait of :meth:`read` (seconds) when ``timeout=None``.

    Notes
    -----
    A position is the int index of the next record.  Meta of record ``i``:
    ``{"source": name, "offset": i}``.
    """

    def __init__(
        self,
        records: Sequence[bytes] | np.ndarray,
        *,
        decoder: Decoder | None = None,
        name: str = "memory",
        endless: bool = False,
        timeout: float = 0.0,
    ) -> None:
        self.decoder = decoder
        self.name = str(name)
        self.endless = bool(endless)
        self.timeout = float(timeout)
        self._cond = threading.Condition()
        self._pos = 0
        self._closed = False
        if decoder is None:
            arr = np.array(records, dtype=np.float64, copy=True)
            if arr.ndim != 2:
                raise ValueError(
                    f"records must be 2-D of shape (n_records, n_features) when decoder is None, "
                    f"got shape {arr.shape}"
                )
            self._rows: np.ndarray | None = arr
            self._raws: list[bytes] = []
            self.feature_names = [f"x{i}" for i in range(arr.shape[1])]
        else:
            if not hasattr(decoder, "decode_many"):
                raise TypeError(f"decoder must have a decode_many method, got {decoder!r}")
            self._rows = None
            self._raws = [bytes(r) for r in records]
            self.feature_names = list(decoder.feature_names)

    def __len__(self) -> int:
        return self._rows.shape[0] if self._rows is not None else len(self._raws)

    def append(self, records: Sequence[bytes] | np.ndarray) -> None:
        """Add records at the end (wakes a waiting :meth:`read`)."""
        with self._cond:
            if self._rows is not None:
                more = np.array(records, dtype=np.float64, copy=True).reshape(-1, self._rows.shape[1])
                self._rows = np.concatenate([self._rows, more])
            else:
                self._raws.extend(bytes(r) for r in records)
            self._cond.notify_all()

    def read(self, max_records: int, timeout: float | None = None) -> Batch:
        """Next batch of at most ``max_records`` records; see :meth:`Source.read`."""
        if isinstance(max_records, bool) or not isinstance(max_records, (int, np.integer)) or max_records < 1:
            raise ValueError(f"max_records must be a positive int, got {max_records!r}")
        wait = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + max(wait, 0.0)
        with self._cond:
            while self._pos >= len(self) and self.endless and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            start, stop = self._pos, min(self._pos + int(max_records), len(self))
            self._pos = stop
            if self._rows is not None:
                chunk = self._rows[start:stop]
                X, good, rejects = _split_nonfinite(
                    chunk.copy(), list(range(stop - start)), [], [], self.feature_names, "feature"
                )
                raw_of = lambda j: json.dumps(chunk[j].tolist()).encode()  # noqa: E731
            else:
                raws = self._raws[start:stop]
                X, good, rejects = self.decoder.decode_many(raws) if raws else (
                    np.empty((0, len(self.feature_names))), [], [])
                raw_of = raws.__getitem__
        meta = [{"source": self.name, "offset": start + j} for j in good]
        rej = [Reject(reason, raw_of(j), {"source": self.name, "offset": start + j}) for j, reason in rejects]
        if stop > start:
            status = "records"
        else:
            status = "idle" if self.endless else "end"
        return Batch(X, meta, rej, stop, status)

    def position(self) -> Position:
        """Index of the next record (an int)."""
        return self._pos

    def seek(self, position: Position) -> None:
        """Resume at record index ``position`` (raises PositionError beyond the end)."""
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise PositionError(f"position must be a non-negative int, got {position!r}")
        if position > len(self):
            raise PositionError(f"position {position!r} is beyond the {len(self)} records of {self.name!r}")
        with self._cond:
            self._pos = position

    def close(self) -> None:
        """Wake any waiting reader; idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class MemorySink(Sink):
    """Keeps records in :attr:`records` (copies, checked to be strict JSON with NaN/inf as null).

    ``write`` queues; ``flush`` makes queued records durable (appends them to :attr:`records`);
    ``position()`` is the number of durable records; ``restore(n)`` drops everything after the n-th.

    Parameters
    ----------
    fail_on_flush : bool, default=False
        For tests: make :meth:`flush` raise ConnectorError (simulates a failing sink).
    """

    def __init__(self, *, fail_on_flush: bool = False) -> None:
        self.records: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []
        self.fail_on_flush = bool(fail_on_flush)
        self.closed = False

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Queue copies of ``records`` (as they would read back from a JSON Lines file)."""
        from connectors.files import to_json_line

        self._pending.extend(json.loads(to_json_line(r)) for r in records)

    def flush(self) -> None:
        """Move queued records to :attr:`records`."""
        if self.fail_on_flush:
            from connectors.base import ConnectorError

            raise ConnectorError(f"MemorySink told to fail: {len(self._pending)} records not delivered")
        self.records.extend(self._pending)
        self._pending.clear()

    def position(self) -> Position:
        """Number of durable (flushed) records."""
        return len(self.records)

    def restore(self, position: Position) -> None:
        """Drop every record after the first ``position`` ones and anything queued."""
        if position is None:
            return
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise PositionError(f"position must be a non-negative int, got {position!r}")
        if position > len(self.records):
            raise PositionError(
                f"cannot restore to {position!r} records: only {len(self.records)} are durable"
            )
        del self.records[position:]
        self._pending.clear()

    def close(self) -> None:
        """Flush; idempotent."""
        if not self.closed:
            self.flush()
            self.closed = True

    def __repr__(self) -> str:
        return f"MemorySink({len(self.records)} records, {len(self._pending)} pending)"

