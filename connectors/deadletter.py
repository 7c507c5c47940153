"""Dead letters: every rejected record goes somewhere, with its reason and where it came from.

:class:`DeadLetterSink` wraps any :class:`~connectors.base.Sink` (a file, Kafka, memory) and writes one
record per :class:`~connectors.base.Reject`::

    {"reason": ..., "raw": ..., "source": ..., <file/line/offset or topic/partition/offset>,
     "position": <source position after the batch, if given>, ["raw_base64": ... if raw is not UTF-8]}

Examples
--------
>>> from connectors.memory import MemorySink, MemorySource
>>> from connectors.decoders import JSONDecoder
>>> src = MemorySource([b'{"x": 1}', b'{"x": "?"}'], decoder=JSONDecoder(["x"]))
>>> dead = DeadLetterSink(MemorySink())
>>> batch = src.read(10)
>>> dead.write_batch(batch)
1
>>> dead.flush()
>>> dead.sink.records
[{'reason': "field 'x' is not a number: '?'", 'raw': '{"x": "?"}', 'source': 'memory', 'offset': 1, 'position': 2}]
"""

from __future__ import annotations

import base64
from typing import Any, Mapping, Sequence

from connectors.base import Batch, Position, Reject, Sink

__all__ = ["DeadLetterSink", "reject_record"]


def reject_record(
    reject: Reject, position: Position = None, *, max_raw_bytes: int | None = None
) -> dict[str, Any]:
    """The dead-letter record of one reject.

    Parameters
    ----------
    reject : Reject
    position : JSON-serialisable, optional
        The source's position after the batch holding the reject; added as ``"position"``.
    max_raw_bytes : int, optional
        Keep at most this many bytes of the raw record (``"raw_truncated": true`` is added if cut).

    Returns
    -------
    dict
        ``reject.to_record()`` plus ``position``; if the raw bytes are not valid UTF-8, the exact bytes
        are kept in ``"raw_base64"`` as well (``"raw"`` has replacement characters).
    """
    raw = bytes(reject.raw)
    truncated = max_raw_bytes is not None and len(raw) > max_raw_bytes
    if truncated:
        raw = raw[:max_raw_bytes]
        reject = Reject(reject.reason, raw, reject.meta)
    rec = reject.to_record()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        rec["raw_base64"] = base64.b64encode(raw).decode("ascii")
    if truncated:
        rec["raw_truncated"] = True
    if position is not None:
        rec["position"] = position
    return rec


class DeadLetterSink(Sink):
    """Wraps any sink and writes rejects to it (flush, position, restore and close are delegated).

    Parameters
    ----------
    sink : Sink
        Where dead letters go (:class:`~connectors.files.JSONLinesSink`, a Kafka sink, ...).
    max_raw_bytes : int, optional
        Cut raw records longer than this (default: keep them whole, nothing is lost).
    """

    def __init__(self, sink: Sink, *, max_raw_bytes: int | None = None) -> None:
        if not isinstance(sink, Sink):
            raise TypeError(f"sink must be a connectors.base.Sink, got {sink!r}")
        if max_raw_bytes is not None and (
            isinstance(max_raw_bytes, bool) or not isinstance(max_raw_bytes, int) or max_raw_bytes < 0
        ):
            raise ValueError(f"max_raw_bytes must be None or a non-negative int, got {max_raw_bytes!r}")
        self.sink = sink
        self.max_raw_bytes = max_raw_bytes
        self.n_written = 0

    def write_rejects(self, rejects: Sequence[Reject], position: Position = None) -> int:
        """Write ``rejects`` (with ``position`` attached); returns how many were written."""
        records = [reject_record(r, position, max_raw_bytes=self.max_raw_bytes) for r in rejects]
        if records:
            self.sink.write(records)
            self.n_written += len(records)
        return len(records)

    def write_batch(self, batch: Batch) -> int:
        """Write the rejects of ``batch`` with ``batch.position``; returns how many were written."""
        return self.write_rejects(batch.rejects, batch.position)

    def write(self, records: Sequence[Reject | Mapping[str, Any]]) -> None:
        """Write :class:`Reject` objects (converted) or ready-made dead-letter dicts."""
        out = [
            reject_record(r, max_raw_bytes=self.max_raw_bytes) if isinstance(r, Reject) else dict(r)
            for r in records
        ]
        if out:
            self.sink.write(out)
            self.n_written += len(out)

    def flush(self) -> None:
        """Flush the wrapped sink."""
        self.sink.flush()

    def flush_async(self):
        """The wrapped sink's :meth:`~connectors.base.Sink.flush_async`."""
        return self.sink.flush_async()

    def position(self) -> Position:
        """The wrapped sink's position."""
        return self.sink.position()

    def restore(self, position: Position) -> None:
        """Restore the wrapped sink."""
        self.sink.restore(position)

    def close(self) -> None:
        """Close the wrapped sink."""
        self.sink.close()

    def __repr__(self) -> str:
        return f"DeadLetterSink({self.sink!r})"
