"""The durable part of a pipeline's checkpoint, on a background thread.

A checkpoint's state is taken at a batch boundary (the sinks' buffered records written out, the model,
positions and counters encoded into the checkpoint's bytes); what remains is waiting for disks: the file
sinks' fsync, then the checkpoint file's write, fsync, rename and the directory's fsync.
:class:`DurableCheckpoint` runs that part on a thread while the pipeline processes the next batches
(on the benchmark's JSON Lines path the fsyncs were 6-10% of the wall time). The order keeps the
contract: the checkpoint becomes visible only after the records it counts are durable, so a process
killed meanwhile resumes from the previous checkpoint and truncates the sinks to it, as before.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

__all__ = ["DurableCheckpoint"]


class DurableCheckpoint:
    """The durable part of one checkpoint: the sinks' fsyncs, then the checkpoint file (its bytes
    encoded at the batch boundary), on a background thread or the caller's.

    Parameters
    ----------
    syncs : list of callable
        The sinks' :meth:`~connectors.base.Sink.flush_async` results, run first, in order.
    store : CheckpointStore
    seq : int
    data : bytes
        From :meth:`CheckpointStore.encode`.
    meta : dict
        The checkpoint's meta (positions and counters, for the commit and the event after it).

    Attributes
    ----------
    path : Path or None
        The checkpoint file, once written.
    error : BaseException or None
        What stopped the durable part, if anything.
    """

    def __init__(self, syncs: list[Callable[[], None]], store: Any, seq: int, data: bytes,
                 meta: dict[str, Any]) -> None:
        self.syncs, self.store, self.seq, self.data, self.meta = syncs, store, seq, data, meta
        self.path: Any = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Do the durable part here (the caller's thread, or the one :meth:`start` made); an error
        is kept in :attr:`error` for the pipeline's thread to raise."""
        try:
            for sync in self.syncs:
                sync()
            self.path = self.store.save_encoded(self.seq, self.data)
        except BaseException as exc:  # noqa: BLE001 - raised on the pipeline's thread
            self.error = exc
        self.data = b""

    def start(self) -> None:
        """Run :meth:`run` on a new daemon thread."""
        self._thread = threading.Thread(target=self.run, name="online-gmm-checkpoint", daemon=True)
        self._thread.start()

    def running(self) -> bool:
        """Whether the thread of :meth:`start` is still at work."""
        return self._thread is not None and self._thread.is_alive()

    def join(self) -> None:
        """Wait for the thread of :meth:`start`, if any."""
        if self._thread is not None:
            self._thread.join()
