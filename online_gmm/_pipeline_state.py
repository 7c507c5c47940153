"""Checkpoint and resume of :class:`~online_gmm.pipeline.Pipeline`: the job's whole state as one
checkpoint, its durable write and the commit that follows it, resuming from the newest good
checkpoint, and the fresh-start record; the mixin :class:`_StateMixin`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from online_gmm._durable import DurableCheckpoint
from online_gmm._online import rng_state_from_json, rng_state_to_json
from online_gmm.checkpoint import pack, unpack
from online_gmm.refit import BICHistory, Reservoir
from online_gmm.timeline import Timeline

_STATE_VERSION = 2   # 2: t-digest anomaly threshold, block reservoir, warm-up row ids


class _StateMixin:
    """Checkpoints, resumes and fresh starts (for :class:`~online_gmm.pipeline.Pipeline`)."""

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        parts: dict[str, tuple[dict[str, np.ndarray], Any]] = {}
        meta: dict[str, Any] = {
            "version": _STATE_VERSION,
            "fingerprint": self.fingerprint,
            "counters": self.summary.counters(),
            "since_refit": self._since_refit,
            "source_position": self.source.position(),
            "feature_names": self.feature_names,
            "sink_positions": {name: (s.position() if s is not None else None)
                               for name, s in self.sinks.items()},
            "labels": None if self._labels is None else self._labels.tolist(),
            "next_label": self._next_label,
            "refit_rng": rng_state_to_json(self._refit_rng),
            "n_components": None if self._online is None else self._online.n_components,
            "n_features": None if self._online is None else self._online.stats.n_features
            if self._online.stats is not None else self.model.n_features_in_,
            "model_params": {k: v for k, v in self.model.get_params().items()
                             if isinstance(v, (int, float, str, bool, type(None)))},
            "anomaly": None if self.anomaly is None else self.anomaly.to_state(),
            "warm_up_rows": self._warm_up_meta,
            "timeline": self.timeline.to_state(),     # optional: absent in older v2 checkpoints
            "config": self.config,
        }
        if self._online is not None:
            parts["model"] = self._online.to_arrays()
        parts["reservoir"] = self.reservoir.to_arrays() if self.reservoir.n_features is not None \
            else ({}, None)
        parts["history"] = self.history.to_arrays()
        arrays, packed_meta = pack(parts)
        meta["parts"] = packed_meta
        return arrays, meta

    def checkpoint(self, *, wait: bool = True) -> None:
        """Flush sinks, write one durable checkpoint, then commit the source's offsets.

        The state is taken here, at a batch boundary. Its durable part (the file sinks' fsync, then
        the checkpoint file's write, fsync and rename) runs on this thread, or with ``wait=False``
        (the periodic checkpoints of :meth:`run`) on a background thread while the next batches
        are processed: the checkpoint becomes visible only once the sinks' records it counts are
        durable, so a kill meanwhile resumes from the previous one, as before. The source's commit
        and the observers' ``checkpoint`` event follow its completion (seen after a batch, at the
        next checkpoint or at :meth:`close`); its error, if any, is raised there.
        """
        self._finish_checkpoint()
        syncs = [sink.flush_async() for sink in self.sinks.values() if sink is not None]
        if self.store is None or (self.summary.records == 0 and not self.store.checkpoints()):
            for sync in syncs:
                sync()
            return
        self.summary.checkpoints += 1       # counted in the checkpoint itself, as `inspect` shows it
        try:
            arrays, meta = self._state()
            seq, data = self.store.encode(arrays, meta)     # a snapshot: the state goes on changing
        except BaseException:
            self.summary.checkpoints -= 1
            for sync in syncs:
                sync()
            raise
        self._since_checkpoint = 0
        self._pending = DurableCheckpoint(syncs, self.store, seq, data, meta)
        if wait:
            self._pending.run()
            self._finish_checkpoint()
        else:
            self._pending.start()

    def _finish_checkpoint(self, block: bool = True) -> None:
        """After the pending checkpoint is durable: commit the source, tell the observers (or raise
        its error). Without ``block``, only if it is done already."""
        job = self._pending
        if job is None or (not block and job.running()):
            return
        job.join()
        self._pending = None
        if job.error is not None:
            raise job.error
        meta = job.meta
        if self.source.commits:        # a Kafka source without a group: the checkpoint is the record
            self.source.commit(meta["source_position"])
        if self.observers:
            self._notify("checkpoint", {"path": str(job.path), "counters": meta["counters"]})

    def resume(self) -> bool:
        """Load the newest good checkpoint, seek the source and restore the sinks; False if none."""
        if self.store is None:
            return False
        loaded = self.store.load_latest()
        if loaded is None:
            self._fresh_start()
            return False
        arrays, meta, path = loaded
        if meta.get("version") != _STATE_VERSION:
            raise ValueError(
                f"{path}: pipeline state version {meta.get('version')!r} is not this version's "
                f"({_STATE_VERSION}); it was written by another online-gmm release: resume it with that "
                "release, or start this job with a new checkpoint directory")
        if self.fingerprint is not None and meta.get("fingerprint") not in (None, self.fingerprint):
            raise ValueError(
                f"{path} was written with a different model/pipeline configuration; use another "
                "checkpoint directory or the original configuration")
        parts = unpack(arrays, meta["parts"])
        for k, v in meta["counters"].items():
            setattr(self.summary, k, int(v))
        self._since_refit = int(meta["since_refit"])
        self._since_checkpoint = 0
        self._labels = None if meta["labels"] is None else np.asarray(meta["labels"], dtype=np.int64)
        self._next_label = int(meta["next_label"])
        rng_state_from_json(self._refit_rng, meta["refit_rng"])
        if "model" in parts:
            self._ensure_online(int(meta["n_features"]))
            self._online.n_components = int(meta["n_components"])
            self._online.load_arrays(*parts["model"])
        if parts.get("reservoir") and parts["reservoir"][1] is not None:
            self.reservoir = Reservoir.from_arrays(*parts["reservoir"])
        self.history = BICHistory.from_arrays(*parts["history"])
        self.timeline = Timeline.from_state(meta.get("timeline"))
        self._warm_up_meta = meta.get("warm_up_rows")
        if self.anomaly is not None and meta["anomaly"] is not None:
            self.anomaly = type(self.anomaly).from_state(meta["anomaly"])
        for name, pos in meta["sink_positions"].items():
            sink = self.sinks.get(name)
            if sink is not None and pos is not None:
                sink.restore(pos)
        if meta["source_position"] is not None:
            self.source.seek(meta["source_position"])
        self.summary.resumed_from = str(path)
        self.summary.n_components = meta["n_components"]
        if self.observers:
            self._notify("resume", {"path": str(path), "counters": dict(meta["counters"]),
                                    "n_components": meta["n_components"]})
        return True

    def _fresh_start(self) -> None:
        """No checkpoint yet: undo what an earlier attempt of this job wrote, and record the start.

        The sinks' positions before the job's first write are kept in the checkpoint directory
        (``fresh-start.json``). An attempt killed (or crashed, or out of disk) before its first
        checkpoint left its output behind; the next fresh start finds the record and restores every
        sink to it (file sinks are truncated), so the outputs end exactly as an uninterrupted run's.
        A record written under another configuration fingerprint belongs to another job and is
        replaced. A Kafka sink cannot take records back (see ``docs/refit-checkpoint.md``).
        """
        import warnings

        from connectors.base import PositionError

        assert self.store is not None
        record = self.store.load_start()
        if record is not None and record.get("fingerprint") == self.fingerprint:
            for name, pos in (record.get("sink_positions") or {}).items():
                sink = self.sinks.get(name)
                if sink is None or pos is None:
                    continue
                try:
                    sink.restore(pos)
                except PositionError as exc:   # the output was moved, shortened or replaced by hand
                    warnings.warn(f"fresh start: the {name} sink continues from its current end: {exc}",
                                  RuntimeWarning, stacklevel=3)
        self.store.save_start({
            "fingerprint": self.fingerprint,
            "sink_positions": {name: (s.position() if s is not None else None)
                               for name, s in self.sinks.items()},
        })
