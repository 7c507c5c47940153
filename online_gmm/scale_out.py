"""The streaming pipeline on many workers: one model, learned in deterministic rounds on Dask.

A mixture's sufficient statistics add up, so many workers can learn one model. The coordinator
(:class:`ScaleOutPipeline`, the ``online-gmm run --workers N`` process) splits the input into
partitions (a Kafka topic's partitions, or the files of a glob) and runs **rounds**. In a round, a
Dask task per partition (:func:`online_gmm._worker.partition_round`) reads exactly ``round_size``
good records of its partition in offset order, scores them with the round's parameters, writes the
partition's own score, anomaly and dead-letter files, and returns only its batch statistics, a
sketch of its scores, its refit-sample candidates, counts and positions. The coordinator then:

1. merges the statistics in partition order (Chan) into **one stepwise EM update** of the model
   (:meth:`online_gmm._online.OnlineEM.step`), and the score sketches into one anomaly threshold;
2. keeps one refit sample (bottom-k sampling, :mod:`online_gmm._bottomk`: a uniform sample of the
   whole stream whatever the order in which partitions arrive), refits it on the refit cadence and
   keeps one BIC history;
3. on the checkpoint cadence, writes one checkpoint holding the model, the sample, the threshold and
   every partition's source and output positions.

Because a round takes a fixed number of good records from each partition and merges in a fixed
order, the model does not depend on timing nor on the number of workers: a run killed (a worker or
the coordinator) and resumed ends with the model of an uninterrupted run, bit for bit, and each
partition's score file holds the same records in the same order. A worker that dies mid-round has its
tasks re-run by Dask on another worker; a task seeks its source and truncates its outputs to the
round's start, so nothing is written twice.

Differences from the one-process pipeline (same core, other batches): one update per round instead of
one per ``batch_size`` records, records learned in partition-round order, the anomaly threshold fixed
for the duration of a round, a bottom-k refit sample (``[refit] mode = "reservoir"`` only), and a
collapsed component re-seeded at a poorly explained record of the round's sample candidates (the
batch's records stay on the workers) instead of the batch's.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
import uuid
import warnings
from typing import Any, Callable

import numpy as np

from online_gmm._bottomk import BottomK
from online_gmm._online import rng_state_from_json, rng_state_to_json
from online_gmm._partitions import PartitionLags, partition_path, partitions_of
from online_gmm._suffstats import SufficientStatistics
from online_gmm._worker import ROW_ID_BITS, close_job, partition_round
from online_gmm.checkpoint import CheckpointStore, pack, unpack
from online_gmm.model_spec import ModelSpec, check_random_state
from online_gmm.pipeline import RunSummary, fingerprint
from online_gmm.refit import BICHistory, refit
from online_gmm.threshold import NLLThreshold
from online_gmm.timeline import Timeline

__all__ = ["ScaleOutPipeline", "partitions_of", "partition_path"]  # the last two from _partitions

_STATE_VERSION = "scale-out-1"


class ScaleOutPipeline:
    """One online mixture learned by many Dask workers in deterministic rounds.

    Parameters
    ----------
    cfg : dict
        A validated configuration (:func:`online_gmm.config.load_config`); its ``[cluster]`` table
        gives ``workers``, ``scheduler`` and ``round_size`` unless given here. Each partition writes
        its own files (named by :func:`partition_path`); a Kafka sink's topic is shared.
    workers : int, optional
        Worker processes of a ``LocalCluster`` started here (on 127.0.0.1).
    scheduler : str, optional
        The address of an existing Dask scheduler instead.
    round_size : int, optional
        Good records per partition per round (default: ``[pipeline] batch_size``).
    read_ahead : bool, optional
        Whether a worker reads and decodes its partition's next round while the coordinator merges
        the last one (default: ``[cluster] read_ahead``, true); a worker then holds two rounds of
        records.
    client : distributed.Client, optional
        An existing client instead of ``workers``/``scheduler`` (not closed here).
    """

    def __init__(self, cfg: dict[str, Any], *, workers: int | None = None, scheduler: str | None = None,
                 round_size: int | None = None, client: Any = None,
                 read_ahead: bool | None = None) -> None:
        cl = cfg.get("cluster", {})
        self.read_ahead = bool(cl.get("read_ahead", True) if read_ahead is None else read_ahead)
        workers = workers if workers is not None else cl.get("workers")
        scheduler = scheduler if scheduler is not None else cl.get("scheduler")
        self.round_size = int(round_size or cl.get("round_size") or cfg["pipeline"]["batch_size"])
        if self.round_size < 1:
            raise ValueError(f"round_size must be >= 1, got {self.round_size}")
        if cfg["refit"]["mode"] != "reservoir":
            raise ValueError("[refit] mode must be 'reservoir' with workers (the sample is built by "
                             "bottom-k sampling across partitions)")
        self.cfg = cfg
        self.model = ModelSpec(**cfg["model"])
        self.model._validate_params()
        an = cfg["anomaly"]
        fixed = an["threshold"] is not None
        self.anomaly = NLLThreshold(q=None if fixed else float(an["quantile"]),
                                    threshold=float(an["threshold"]) if fixed else None,
                                    min_samples=int(an["min_samples"]))
        self.policy = an["policy"]
        rf, ck = cfg["refit"], cfg["checkpoint"]
        self.refit_every, self.checkpoint_every = int(rf["every"]), int(ck["every"])
        self.sample = BottomK(int(rf["reservoir_size"]))
        self.history = BICHistory()
        self.summary = RunSummary()
        self.summary.extra.update(rounds=0, skipped_updates=0)
        self._refit_rng = np.random.RandomState(rf["seed"])
        self._labels: np.ndarray | None = None
        self._next_label = 0
        self._online = None
        self._since_refit = self._since_checkpoint = 0
        self._late: dict[str, list] = {}
        self._stop = threading.Event()
        self._started = False
        self.fingerprint = hashlib.sha256(
            f"{fingerprint(cfg)}:scale-out:{self.round_size}".encode()).hexdigest()[:16]
        self.job = uuid.uuid4().hex[:12]
        self.timings: list[dict[str, float]] = []   # per round: wall, busiest worker, merge
        self._group: Any = None                      # commits checkpointed offsets ([source] group_id)
        self.timeline = Timeline()
        #: callables ``(event, fields)`` told of every round ("batch"), refit, checkpoint and resume,
        #: with the fields :class:`~online_gmm.pipeline.Pipeline` gives them (metrics, JSON logs)
        self.observers: list[Callable[[str, dict[str, Any]], None]] = []
        #: the consumer lag of every partition at its last round (``source.lag()``, for the metrics)
        self.source = PartitionLags()
        self.store = CheckpointStore(ck["directory"], keep=ck["keep"]) if ck["directory"] else None
        if self.store is not None:
            self.store.lock()
        self._own_cluster = None
        self._workers: list[str] = []
        try:
            self.parts = []
            for i, (identity, src) in enumerate(partitions_of(cfg["source"])):
                tag = f"part-{i:04d}"
                # file sinks: one file (or folder) per partition; a Kafka sink: the same topic for all
                sinks = {name: s if s["type"] == "kafka" else {**s, "path": partition_path(s["path"], tag)}
                         for name, s in cfg["sinks"].items()}
                self.parts.append({
                    "spec": {"job": self.job, "tag": tag, "index": i, "source": src, "sinks": sinks,
                             "include_features": cfg["pipeline"]["features"],
                             "include_responsibilities": cfg["pipeline"]["responsibilities"]},
                    "identity": identity, "source": None, "sinks": {}, "scored": 0, "done": False})
            self.client = client if client is not None else self._connect(workers, scheduler)
        except BaseException:
            if self.store is not None:
                self.store.unlock()
            raise

    def _connect(self, workers: int | None, scheduler: str | None) -> Any:
        import distributed
        if scheduler:
            return distributed.Client(scheduler, set_as_default=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # "port in use, using a random port" and the like
            self._own_cluster = distributed.LocalCluster(
                n_workers=int(workers or 1), threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None)
        return distributed.Client(self._own_cluster, set_as_default=False)

    # ------------------------------------------------------------------------------ access
    def output_files(self) -> list[str]:
        """Every partition's output paths (files, or folders for Parquet)."""
        return [cfg["path"] for p in self.parts for cfg in p["spec"]["sinks"].values()
                if cfg["type"] != "kafka"]

    @property
    def online(self):
        """The model's :class:`~online_gmm._online.OnlineEM` state (None before the first rows)."""
        return self._online

    def fitted_model(self):
        """The model as a fitted :class:`~online_gmm.estimator.OnlineGaussianMixture`."""
        if self._online is None or not self._online.initialised:
            raise RuntimeError("the model has not finished its warm-up yet")
        return self.model.estimator()._adopt(self._online)

    def stop(self) -> None:
        """Finish (or abandon) the current round, checkpoint and return."""
        self._stop.set()

    # ------------------------------------------------------------------------------ the loop
    def run(self, max_records: int | None = None, *, idle_timeout: float | None = None,
            progress: Callable[[RunSummary], None] | None = None) -> RunSummary:
        """Run rounds until every partition ended, ``max_records`` were consumed, or a stop.

        Parameters are those of :meth:`online_gmm.pipeline.Pipeline.run`; ``idle_timeout`` ends a
        partition that gave no record for that long (a round waits for every partition's quota).
        """
        t_start = time.perf_counter()
        previous = self._install_signals()
        try:
            if not self._started:
                self._started = True
                self.resume()
            while not self._stop.is_set():
                active = [p for p in self.parts if not p["done"]]
                if not active or (max_records is not None and self.summary.records >= max_records):
                    break
                if not self._round(active, idle_timeout):
                    break
                if progress is not None:
                    progress(self.summary)
            self.checkpoint()
        finally:
            if previous:
                for sig, h in previous.items():
                    signal.signal(sig, h)
        self.summary.seconds += time.perf_counter() - t_start
        return self.summary

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            self.summary.stopped_by_signal = True
            self._stop.set()

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _round_state(self, idle_timeout: float | None, stop_event: str) -> dict[str, Any]:
        online = self._online
        ready = online is not None and online.initialised
        return {
            "quota": self.round_size, "timeout": float(self.cfg["source"]["timeout"]),
            "idle_timeout": idle_timeout, "stop_event": stop_event, "read_ahead": self.read_ahead,
            "model": online.to_arrays() if ready else None,
            "model_params": dict(self.cfg["model"]),
            "n_components": online.n_components if ready else None,
            # the threshold's value for the round (None: not active yet) and its settings, for the
            # workers' sketches of their scores; the sketch itself stays here
            "threshold": float(self.anomaly.threshold_) if self.anomaly.active_ else None,
            "threshold_settings": {"q": self.anomaly.q, "threshold": self.anomaly.threshold,
                                   "min_samples": self.anomaly.min_samples, "k": self.anomaly.k},
            "policy": self.policy, "max_flagged": self.timeline.max_flagged,
            "labels": None if self._labels is None else self._labels.tolist(),
            "sample_cut": self.sample.cut(), "sample_size": self.sample.size,
            "seed": int(self.cfg["refit"]["seed"]),
        }

    def _submit(self, parts: list[dict[str, Any]], state: dict[str, Any], name: str, *,
                late: bool = True) -> list:
        if not self._workers or self.summary.extra["rounds"] % 10 == 0:   # a round trip: not every round
            self._workers = sorted(self.client.nthreads())
        workers = self._workers                    # a partition keeps its worker while the set stays
        futures = []
        for p in parts:
            start = {"source": p["source"], "sinks": p["sinks"], "scored": p["scored"]}
            st = {**state, "late": self._late.get(p["spec"]["tag"]) if late else None}
            where = {"workers": [workers[p["spec"]["index"] % len(workers)]],
                     "allow_other_workers": True} if workers else {}
            futures.append(self.client.submit(
                partition_round, p["spec"], start, st, key=f"ogmm-{self.job}-{name}-{p['spec']['tag']}",
                pure=False, **where))
        return futures

    def _round(self, active: list[dict[str, Any]], idle_timeout: float | None) -> bool:
        """One round; False when it was abandoned by a stop (nothing of it is kept)."""
        import distributed
        t0 = time.perf_counter()
        n_round = self.summary.extra["rounds"]
        stop_name = f"ogmm-stop-{self.job}-{n_round}"
        futures = self._submit(active, self._round_state(idle_timeout, stop_name), f"r{n_round}")
        gathered = threading.Event()

        def tell_the_workers_on_stop() -> None:    # a stop while the round waits for records
            while not gathered.wait(0.1):
                if self._stop.is_set():
                    distributed.Event(stop_name, client=self.client).set()
                    return

        threading.Thread(target=tell_the_workers_on_stop, daemon=True).start()
        try:
            results = self.client.gather(futures)
        finally:
            gathered.set()                         # the watcher ends within 0.1 s, not waited for
        if any(r["status"] == "stopped" for r in results):
            # abandoned: the partitions that finished are put back where the round started
            self.client.gather(self._submit(active, {**self._round_state(None, ""), "quota": 0},
                                            f"r{n_round}-undo", late=False))
            return False
        t1 = time.perf_counter()
        self._merge(active, results)
        t2 = time.perf_counter()
        busy: dict[Any, float] = {}                 # each worker's tasks run one after another
        ahead: dict[Any, float] = {}
        for r in results:
            busy[r.get("worker")] = busy.get(r.get("worker"), 0.0) + r["seconds"]
            # the reads the tasks took from the read-ahead, done between rounds
            ahead[r.get("worker")] = ahead.get(r.get("worker"), 0.0) + r.get("read_ahead_seconds", 0.0)
        self.timings.append({"wall": t2 - t0, "busiest_worker": max(busy.values()), "merge": t2 - t1,
                             "read_ahead": max(ahead.values())})
        return True

    # ------------------------------------------------------------------------------ the merge
    def _merge(self, active: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
        s = self.summary
        t0 = time.perf_counter()
        before = (s.records, s.good, s.rejected, s.anomalies, s.learned)
        merged, ll, learned, good = None, 0.0, 0, 0
        warm: list[tuple[int, np.ndarray, np.ndarray]] = []
        recent: list[np.ndarray] = []               # this round's sample candidates
        loglik = np.zeros(4)
        reasons: list[str] = []
        refused = 0
        for p, r in zip(active, results):          # partition order: the merge is deterministic
            loglik += r["loglik"]
            reasons += r["reasons"]
            refused += r["refused"]
            if r["flagged_rows"] is not None:
                self.timeline.add_flagged(r["flagged_rows"])
            if r["lag"] is not None:
                self.source.update(r["lag"])
            s.records += r["records"]
            s.good += r["good"]
            s.rejected += r["rejected"]
            s.anomalies += r["anomalies"]
            s.batches += 1
            good += r["good"]
            p["source"], p["sinks"] = r["source"], r["sinks"]
            p["scored"] += r["scored"]
            p["done"] = r["status"] in ("end", "idle-timeout")
            self._late.pop(p["spec"]["tag"], None)  # written by this round's task
            if r["stats"] is not None:
                merged = SufficientStatistics.accumulate(merged, SufficientStatistics.from_arrays(*r["stats"]))
                ll += r["ll"]
                learned += r["learned"]
            if r["threshold"] is not None:
                self.anomaly.merge(NLLThreshold.from_state(r["threshold"]))
            if r["sample"] is not None:
                self.sample.offer(*r["sample"])
                if len(r["sample"][0]):
                    recent.append(r["sample"][0])
            if r["rows"] is not None and len(r["rows"]):
                warm.append((p["spec"]["index"], r["rows"], r["row_ids"]))
        s.extra["rounds"] += 1
        if warm:
            self._warm_up(warm)
        elif merged is not None:
            online = self._online
            try:
                # a collapsed component is re-seeded at a poorly explained record of this round's
                # sample candidates (records of the round, drawn uniformly on the workers), or of the
                # whole sample when the round offered none: the round's records stay on the workers
                seeds = np.concatenate(recent) if recent else self.sample.data()
                online.step(np.empty((0, online.stats.n_features)), batch=(merged, ll),
                            extra=(learned, float(learned)),
                            candidates=seeds if seeds.shape[0] else None)
                s.learned += learned
            except ValueError as exc:
                s.extra["skipped_updates"] += 1
                warnings.warn(f"round {s.extra['rounds']}: the merged update was skipped: {exc}",
                              RuntimeWarning, stacklevel=2)
        if self._online is not None and self._online.initialised:
            s.n_components = self._online.n_components
        self._after_round(before, loglik, reasons, refused, max(r["seconds"] for r in results)
                          + time.perf_counter() - t0)
        self._since_refit += good
        self._since_checkpoint += good
        if (self.refit_every and self._since_refit >= self.refit_every and self._online is not None
                and self._online.initialised):
            try:
                self.refit_now()
            except ValueError as exc:
                warnings.warn(f"refit skipped at record {s.good}: {exc}", RuntimeWarning, stacklevel=2)
                self._since_refit = 0
        if self.store is not None and self._since_checkpoint >= self.checkpoint_every:
            self.checkpoint()

    def _after_round(self, before: tuple[int, ...], loglik: np.ndarray, reasons: list[str], refused: int,
                     seconds: float) -> None:
        """Count the round in the timeline and tell the observers, as one batch of the pipeline."""
        s = self.summary
        read, good, rejected, flagged, learned = (s.records - before[0], s.good - before[1],
                                                  s.rejected - before[2], s.anomalies - before[3],
                                                  s.learned - before[4])
        threshold = float(self.anomaly.threshold_) if self.anomaly.active_ else None
        scored, sum_ll, scored_kept, sum_ll_kept = int(loglik[0]), float(loglik[1]), int(loglik[2]), \
            float(loglik[3])
        self.timeline.add_batch(records=read, good=good, rejected=rejected, flagged=flagged,
                                scored=scored, sum_loglik=sum_ll, scored_kept=scored_kept,
                                sum_loglik_kept=sum_ll_kept, k=s.n_components, threshold=threshold,
                                records_end=s.records, good_end=s.good, seconds=seconds, time=time.time())
        self._notify("batch", {"records": read, "good": good, "rejected": rejected, "flagged": flagged,
                               "learned": learned, "reasons": reasons, "refused": refused,
                               "scored": scored, "mean_loglik": sum_ll / scored if scored else None,
                               "threshold": threshold, "n_components": s.n_components,
                               "seconds": seconds})

    def _notify(self, event: str, fields: dict[str, Any]) -> None:
        for observer in self.observers:
            observer(event, fields)

    def _warm_up(self, warm: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
        """The warm-up's rows go through the core's own warm-up buffer (and fit), in partition order."""
        X = np.concatenate([rows for _, rows, _ in warm])
        gids = np.concatenate([(np.int64(i) << ROW_ID_BITS) | ids for i, _, ids in warm])
        if self._online is None:
            self._online = self.model._new_online(X.shape[1], check_random_state(self.model.random_state))
        # the buffer's rows before this update: a refusal may name a row of an earlier round
        known = {int(g): x for Xb, ib in zip(self._online._buf_X, self._online._buf_ids)
                 for g, x in zip(ib.tolist(), Xb)}
        known.update((int(g), x) for g, x in zip(gids.tolist(), X))
        refused = self._online.update(X, ids=gids, on_refused="skip", screened=True)
        self.summary.learned += X.shape[0] - len(refused)
        for gid, why in refused:                   # their partitions dead-letter them next round
            index, number = gid >> ROW_ID_BITS, gid & ((1 << ROW_ID_BITS) - 1)
            x = known.get(int(gid), np.full(X.shape[1], np.nan))
            self._late.setdefault(f"part-{index:04d}", []).append((number, why, np.asarray(x).tolist()))
        self.summary.good -= len(refused)
        self.summary.rejected += len(refused)

    def refit_now(self) -> dict[str, Any]:
        """Refit the sample for every candidate K now; returns the BIC history row."""
        online, rf = self._online, self.cfg["refit"]
        data = self.sample.data()
        k = online.n_components
        cands = rf["candidates"] or sorted({max(1, k - 1), k, k + 1})
        cands = [c for c in cands if c <= data.shape[0]]
        result = refit(
            data, online.stats, cands, covariance_type=online.covariance_type,
            reg_covar=online.reg_covar, tol=self.model.tol, max_iter=rf["max_iter"], n_init=rf["n_init"],
            rng=int(self._refit_rng.randint(np.iinfo(np.int32).max)), params=online.params,
            criterion=rf["criterion"], labels=self._labels, next_label=self._next_label or None,
            n_seen=self.summary.good)
        result.apply_to(online)
        self._labels = np.asarray(result.matching.labels)
        self._next_label = int(result.matching.next_label)
        self.history.append(result.row)
        self.timeline.add_refit(self.history.rows[-1])
        self.summary.refits += 1
        self.summary.n_components = online.n_components
        self._since_refit = 0
        self._notify("refit", {"row": self.history.rows[-1]})
        return result.row

    # ------------------------------------------------------------------------------ checkpoints
    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        online = self._online
        meta: dict[str, Any] = {
            "version": _STATE_VERSION, "kind": "scale-out", "fingerprint": self.fingerprint,
            "round_size": self.round_size, "counters": self.summary.counters(),
            "extra": dict(self.summary.extra), "since_refit": self._since_refit,
            "partitions": [{"identity": p["identity"], "tag": p["spec"]["tag"], "source": p["source"],
                            "sinks": p["sinks"], "scored": p["scored"], "done": p["done"]}
                           for p in self.parts],
            "late": self._late,
            "labels": None if self._labels is None else self._labels.tolist(),
            "next_label": self._next_label, "refit_rng": rng_state_to_json(self._refit_rng),
            "n_components": None if online is None else online.n_components,
            "n_features": None if online is None else (online.stats.n_features if online.stats is not None
                                                       else int(online._buf_X[0].shape[1])),
            "model_params": {k: v for k, v in self.model.get_params().items()
                             if isinstance(v, (int, float, str, bool, type(None)))},
            "anomaly": self.anomaly.to_state(),
            "feature_names": self.cfg["source"]["fields"] or self.cfg["source"]["columns"],
            "timeline": self.timeline.to_state(),
        }
        parts: dict[str, Any] = {"sample": self.sample.to_arrays(), "history": self.history.to_arrays()}
        if online is not None:
            parts["model"] = online.to_arrays()
        arrays, meta["parts"] = pack(parts)
        return arrays, meta

    def checkpoint(self) -> None:
        """Write one durable checkpoint of the whole job (the workers made their outputs durable)."""
        if self.store is None or (self.summary.records == 0 and not self.store.checkpoints()):
            return
        self.summary.checkpoints += 1
        try:
            arrays, meta = self._state()
            path = self.store.save(arrays, meta)
        except BaseException:
            self.summary.checkpoints -= 1
            raise
        self._since_checkpoint = 0
        self._commit_offsets()
        self._notify("checkpoint", {"path": str(path), "counters": meta["counters"]})

    def _commit_offsets(self) -> None:
        """Commit every Kafka partition's checkpointed position to ``[source] group_id``, if set.

        The workers read without a group; the group is told how far the job got only once the
        checkpoint holding those positions is durable, as a one-process pipeline commits.
        """
        src = self.cfg["source"]
        if src["type"] != "kafka" or not src.get("group_id"):
            return
        position: dict[str, dict[str, int]] = {}
        for p in self.parts:
            for topic, offsets in (p["source"] or {}).items():
                position.setdefault(topic, {}).update(offsets)
        if not position:
            return
        if self._group is None:
            from connectors.kafka._offsets import GroupOffsets
            self._group = GroupOffsets(src["bootstrap_servers"], src["group_id"], client=src["client"],
                                       settings=src["settings"])
        self._group.commit(position)

    def resume(self) -> bool:
        """Load the newest checkpoint (or record a fresh start); False if there was none."""
        if self.store is None:
            return False
        loaded = self.store.load_latest()
        if loaded is None:
            self._fresh_start()
            return False
        arrays, meta, path = loaded
        if meta.get("version") != _STATE_VERSION:
            raise ValueError(f"{path}: not a checkpoint of a scaled-out job of this release (version "
                             f"{meta.get('version')!r}); use another checkpoint directory")
        if meta.get("fingerprint") != self.fingerprint:
            raise ValueError(f"{path} was written with a different model/pipeline/round configuration; "
                             "use another checkpoint directory or the original configuration")
        saved = [q["identity"] for q in meta["partitions"]]
        if saved != [p["identity"] for p in self.parts]:
            raise ValueError(f"{path}: the input's partitions changed since the checkpoint "
                             f"({len(saved)} then, {len(self.parts)} now); a scaled-out job resumes "
                             "on the same partitions")
        for p, q in zip(self.parts, meta["partitions"]):
            p.update(source=q["source"], sinks=q["sinks"], scored=int(q["scored"]), done=bool(q["done"]))
        parts = unpack(arrays, meta["parts"])
        for k, v in meta["counters"].items():
            setattr(self.summary, k, int(v))
        self.summary.extra.update(meta["extra"])
        self._since_refit = int(meta["since_refit"])
        self._late = {k: [tuple(x) for x in v] for k, v in meta["late"].items()}
        self._labels = None if meta["labels"] is None else np.asarray(meta["labels"], dtype=np.int64)
        self._next_label = int(meta["next_label"])
        rng_state_from_json(self._refit_rng, meta["refit_rng"])
        if "model" in parts:
            self._online = self.model._new_online(int(meta["n_features"]),
                                                  check_random_state(self.model.random_state))
            self._online.n_components = int(meta["n_components"])
            self._online.load_arrays(*parts["model"])
        self.sample = BottomK.from_arrays(*parts["sample"])
        self.history = BICHistory.from_arrays(*parts["history"])
        self.anomaly = NLLThreshold.from_state(meta["anomaly"])
        self.timeline = Timeline.from_state(meta.get("timeline"))
        self.summary.resumed_from = str(path)
        self.summary.n_components = meta["n_components"]
        self._notify("resume", {"path": str(path), "counters": dict(meta["counters"]),
                                "n_components": meta["n_components"]})
        return True

    def _fresh_start(self) -> None:
        """No checkpoint: outputs start where they were before the job's first attempt wrote."""
        from online_gmm.config import build_sink
        assert self.store is not None
        record = self.store.load_start()
        if record is not None and record.get("fingerprint") == self.fingerprint \
                and set(record.get("sink_positions") or {}) == {p["spec"]["tag"] for p in self.parts}:
            for p in self.parts:
                p["sinks"] = record["sink_positions"][p["spec"]["tag"]]
            return
        positions = {}
        for p in self.parts:
            here = {}
            for name, cfg in p["spec"]["sinks"].items():
                if cfg["type"] == "kafka":          # cannot take records back: nothing to restore
                    here[name] = None
                    continue
                sink = build_sink(cfg)
                try:
                    here[name] = sink.position()
                finally:
                    sink.close()
            p["sinks"] = positions[p["spec"]["tag"]] = here
        self.store.save_start({"fingerprint": self.fingerprint, "sink_positions": positions})

    def close(self) -> None:
        """Close the workers' sources and outputs of this job, the cluster started here, the lock."""
        if self._group is not None:
            self._group.close()
            self._group = None
        try:
            try:
                self.client.run(close_job, self.job)
            except Exception:  # noqa: BLE001 - workers gone: nothing left open on them
                pass
            if self._own_cluster is not None:
                self.client.close()
                self._own_cluster.close()
        finally:
            if self.store is not None:
                self.store.unlock()

