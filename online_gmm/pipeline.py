"""The streaming job: source -> validate -> score -> learn -> sinks -> refit -> checkpoint -> commit.

:class:`Pipeline` is the one place that holds both the connectors and the model. Each batch:

1. is read from the source until it holds exactly ``batch_size`` good records, so a replay cuts the
   same batches and bad records mixed into a stream do not move the batch boundaries (only the last
   batch of a finite source may be shorter);
2. rejected records go to the dead-letter sink with their reasons and positions, never to the model;
3. good records are **scored before they are learned** (cluster id, probability of that cluster,
   log-likelihood, anomaly flag), then learned with one stepwise EM update (a record flagged as an
   anomaly is learned or not depending on the anomaly policy);
4. results go to the scores and anomalies sinks;
5. every ``refit.every`` records the reservoir is refitted for every candidate K, the BIC history
   grows, and the winner replaces the online parameters (component ids kept stable);
6. every ``checkpoint.every`` records (and at the end, and on SIGTERM/SIGINT) the sinks are flushed,
   one checkpoint holding the whole state is written durably, and only then are the source's offsets
   committed.

On start the newest good checkpoint is loaded, the source seeks to its position and file sinks are
truncated to the sizes they had, so a killed process resumes with nothing lost and nothing counted
twice.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from connectors.base import Reject, records_from_columns, take_columns
from connectors.deadletter import DeadLetterSink
from online_gmm._durable import DurableCheckpoint
from online_gmm._online import rng_state_from_json, rng_state_to_json
from online_gmm._reading import GoodRecords
from online_gmm._records import score_columns, values_raw
from online_gmm.checkpoint import CheckpointStore, pack, unpack
from online_gmm.model_spec import ModelSpec, check_random_state
from online_gmm.refit import BICHistory, Reservoir, refit
from online_gmm.timeline import Timeline

if TYPE_CHECKING:  # pragma: no cover - the estimator (scikit-learn) is imported where it is used
    from online_gmm.estimator import OnlineGaussianMixture

__all__ = ["Pipeline", "RunSummary"]

_STATE_VERSION = 2   # 2: t-digest anomaly threshold, block reservoir, warm-up row ids


@dataclass
class RunSummary:
    """Counters of a run (cumulative over resumes)."""

    records: int = 0          # consumed: good + rejected
    good: int = 0
    rejected: int = 0
    learned: int = 0
    anomalies: int = 0
    batches: int = 0
    refits: int = 0
    checkpoints: int = 0
    resumed_from: str | None = None
    stopped_by_signal: bool = False
    n_components: int | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def counters(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("records", "good", "rejected", "learned", "anomalies",
                                              "batches", "refits", "checkpoints")}


class Pipeline:
    """A resumable streaming job around one online Gaussian mixture.

    Parameters
    ----------
    source : connectors.base.Source
    model : OnlineGaussianMixture or ModelSpec
        Unfitted; its parameters define the online model (the pipeline drives its core directly, one
        E-step per batch for both scoring and learning). A :class:`~online_gmm.model_spec.ModelSpec`
        holds the same parameters without scikit-learn (a job then starts in a fraction of the time);
        :meth:`fitted_model` turns it into an estimator when one is asked for.
    batch_size : int, default=5000
        Good records per batch (rejected records do not count).
        The per-batch costs (one E-step, one sketch update, one encode and write call) are paid once
        per batch: measured on 8 features, K=4 full, batches of 5000 move 1.4x (JSON Lines) to 2.3x
        (Parquet) more records per second than batches of 500 (``benchmarks/bench_pipeline.py``). A
        batch waits for its records: lower it where latency matters more than throughput.
    scores, anomalies, dead_letters : connectors.base.Sink, optional
        Outputs. ``dead_letters`` (wrapped in a :class:`~connectors.deadletter.DeadLetterSink` if it
        is not one) receives every rejected record with its reason and position.
    anomaly : online_gmm.anomaly threshold, optional
        Decides which records are anomalies from their negative log-likelihood.
    anomaly_policy : {'adapt', 'protect'}, default='adapt'
        'adapt' learns flagged records too (follows drift), 'protect' skips them (keeps the model
        clean, at the risk of never adapting to a new regime).
    refit_every : int, default=0
        Records between refits (0: never).
    refit_candidates : list of int, optional
        Numbers of components tried at each refit (default: the current K and its neighbours).
    reservoir_size, reservoir_mode, refit_n_init, refit_max_iter, refit_criterion, seed
        Refit settings (see :mod:`online_gmm.refit`).
    refit_fn : callable, optional
        Replaces :func:`online_gmm.refit.refit` (e.g. a Dask-backed refit), same signature.
    checkpoint_dir : str, optional
        Where checkpoints go; without it the job cannot resume.
    checkpoint_every : int, default=5000
        Records between checkpoints.
    keep : int, default=3
        Checkpoints kept.
    include_responsibilities, include_features : bool
        Add the responsibility vector / the feature values to each score record.
    config : dict, optional
        The job's configuration (JSON-able, secrets removed by the caller), kept in checkpoints for
        ``online-gmm report``.

    Attributes
    ----------
    timeline : online_gmm.timeline.Timeline
        Bounded per-batch history (counts, mean log-likelihood, anomaly rate, K, threshold) and the
        most recent flagged records, kept in the checkpoint for ``online-gmm report``.
    observers : list of callable(event, fields)
        Called with ``"resume"``, ``"batch"``, ``"refit"`` and ``"checkpoint"`` events and a dict
        of their fields (:mod:`online_gmm.watch` turns them into metrics and logs).
    """

    def __init__(self, source, model: OnlineGaussianMixture | ModelSpec, *, batch_size: int = 5000,
                 scores=None, anomalies=None, dead_letters=None, anomaly=None,
                 anomaly_policy: str = "adapt", refit_every: int = 0,
                 refit_candidates: list[int] | None = None, reservoir_size: int = 5000,
                 reservoir_mode: str = "reservoir", refit_n_init: int = 2, refit_max_iter: int = 100,
                 refit_criterion: str = "bic", seed: int = 0,
                 refit_fn: Callable[..., Any] | None = None, checkpoint_dir: str | None = None,
                 checkpoint_every: int = 5000, keep: int = 3, include_responsibilities: bool = False,
                 include_features: bool = True, feature_names: list[str] | None = None,
                 config_fingerprint: str | None = None, config: Mapping[str, Any] | None = None) -> None:
        if anomaly_policy not in ("adapt", "protect"):
            raise ValueError(f"anomaly_policy must be 'adapt' or 'protect', got {anomaly_policy!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.source = source
        self.model = model
        self.batch_size = batch_size
        if dead_letters is not None and not isinstance(dead_letters, DeadLetterSink):
            dead_letters = DeadLetterSink(dead_letters)
        self.sinks = {"scores": scores, "anomalies": anomalies, "dead_letters": dead_letters}
        self.anomaly = anomaly
        self.anomaly_policy = anomaly_policy
        self.refit_every = int(refit_every)
        self.refit_candidates = refit_candidates
        self.refit_n_init = refit_n_init
        self.refit_max_iter = refit_max_iter
        self.refit_criterion = refit_criterion
        self.refit_fn = refit_fn or refit
        self.checkpoint_every = int(checkpoint_every)
        self.store = CheckpointStore(checkpoint_dir, keep=keep) if checkpoint_dir else None
        if self.store is not None:
            self.store.lock()   # one job per checkpoint directory: a second process refuses here
        self.include_responsibilities = include_responsibilities
        self.include_features = include_features
        self.feature_names = feature_names
        self.fingerprint = config_fingerprint
        self.summary = RunSummary()
        self.history = BICHistory()
        self.timeline = Timeline()
        self.observers: list[Callable[[str, dict[str, Any]], None]] = []
        self.config = None if config is None else json.loads(json.dumps(config, default=str))
        self._batch_loglik = (0, 0.0, 0, 0.0)   # records scored with a finite log p, their sum;
        #                                         the same for those not flagged (this batch)
        self.reservoir = Reservoir(reservoir_size, mode=reservoir_mode, seed=seed)
        self._refit_rng = np.random.RandomState(seed)
        self._labels: np.ndarray | None = None   # stable id of each component
        self._next_label = 0
        self._stop = threading.Event()
        self._started = False
        self._pending: DurableCheckpoint | None = None   # a checkpoint being made durable
        self._since_checkpoint = 0
        self._since_refit = 0
        self._last_data: float | None = None   # when the source last gave a record (idle timeout)
        self._warm_up_meta: list[dict[str, list]] | None = None   # the warm-up's rows, per batch
        self._warm_up_rows_kept: np.ndarray | None = None
        model._validate_params()
        self._online = None

    # ------------------------------------------------------------------------------ model access
    def _ensure_online(self, n_features: int) -> None:
        if self._online is None:
            self._online = self.model._new_online(n_features, check_random_state(self.model.random_state))
            self.model.n_features_in_ = n_features
            self.model._online = self._online

    @property
    def online(self):
        """The :class:`~online_gmm._online.OnlineEM` state (None before the first record)."""
        return self._online

    def fitted_model(self) -> OnlineGaussianMixture:
        """The model as a fitted :class:`OnlineGaussianMixture` (for scoring elsewhere).

        It shares the pipeline's online state. A :class:`~online_gmm.model_spec.ModelSpec` given as
        the model is replaced by its estimator on the first call (scikit-learn is imported then).
        """
        if self._online is None or not self._online.initialised:
            raise RuntimeError("the model has not finished its warm-up yet")
        if isinstance(self.model, ModelSpec):
            self.model = self.model.estimator()
        return self.model._adopt(self._online)

    # ------------------------------------------------------------------------------ control
    def stop(self) -> None:
        """Ask the run to finish the current batch, checkpoint, commit and return."""
        self._stop.set()

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = {}

        def handler(signum, frame):
            self.summary.stopped_by_signal = True
            self._stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
        return previous

    # ------------------------------------------------------------------------------ the loop
    def run(self, max_records: int | None = None, *, idle_timeout: float | None = None,
            progress: Callable[[RunSummary], None] | None = None) -> RunSummary:
        """Process the stream until it ends, ``max_records`` records in all were consumed, or a stop.

        Parameters
        ----------
        max_records : int, optional
            Stop at the first batch boundary once this many records (good plus rejected, cumulative
            over resumes) were consumed; stopping on a boundary lets a later run continue the very
            same batches.
        idle_timeout : float, optional
            Stop after this many seconds without a record (streams that never say "end").
        progress : callable(RunSummary), optional
            Called after every batch.
        """
        t_start = time.perf_counter()
        previous = self._install_signals()
        try:
            if not self._started:       # a second run() continues in memory, it does not reload
                self._started = True
                self.resume()
            self._last_data = time.monotonic()
            done = False
            while not done and not self._stop.is_set():
                if max_records is not None and self.summary.records >= max_records:
                    break
                batch, status = self._read_exactly(self.batch_size, idle_timeout)
                if batch is not None:
                    self._process(*batch)
                    if progress is not None:
                        progress(self.summary)
                if status in ("end", "idle-timeout"):
                    done = True
            self.checkpoint()
        finally:
            if previous:
                for sig, h in previous.items():
                    signal.signal(sig, h)
        self.summary.seconds += time.perf_counter() - t_start
        return self.summary

    def _read_exactly(self, n: int, idle_timeout: float | None = None):
        """Read until the batch holds ``n`` good records, or the source ends, or it stays idle.

        Counting good records keeps the batches of the model identical whether or not bad records are
        mixed into the stream, and a replay cuts the same batches.  A partial batch waits for the rest
        while records keep arriving; after ``idle_timeout`` seconds without one (or on a stop) it is
        processed as it is, like the last batch of a finished source.

        Returns
        -------
        batch : (X, columns, rejects, position) or None
            ``X`` of shape (n_good, n_features), ``columns`` a dict of arrays of length n_good.
        status : {"records", "idle", "end", "idle-timeout"}
        """
        acc = GoodRecords()
        status = "records"
        timeout = getattr(self.source, "timeout", 1.0)
        if idle_timeout is not None:
            timeout = min(timeout, max(idle_timeout, 0.0))
        since = time.monotonic() if self._last_data is None else self._last_data
        while acc.good < n:
            b = self.source.read(n - acc.good, timeout)
            if acc.add(b):
                since = self._last_data = time.monotonic()
            status = b.status
            if status == "end":
                break
            if status == "idle":
                if self._pending is not None:   # waiting for records: report a durable checkpoint
                    self._finish_checkpoint(block=False)
                if idle_timeout is not None and time.monotonic() - since >= idle_timeout:
                    status = "idle-timeout"
                    break
                if acc.consumed == 0 or self._stop.is_set():
                    break
                continue  # a partial batch waits for the rest, so batch boundaries stay fixed
        if acc.consumed == 0:
            return None, status
        return acc.batch(), status

    def _process(self, X: np.ndarray, columns: dict[str, Any], rejects: list, position: Any) -> None:
        s = self.summary
        t0, before = time.perf_counter(), (s.good, s.rejected, s.anomalies, s.learned)
        self._batch_loglik = (0, 0.0, 0, 0.0)
        n_good = X.shape[0]
        s.records += n_good + len(rejects)
        s.good += n_good
        s.rejected += len(rejects)
        s.batches += 1
        if rejects and self.sinks["dead_letters"] is not None:
            self.sinks["dead_letters"].write_rejects(rejects, position)
        if n_good:
            X = np.ascontiguousarray(X, dtype=np.float64)
            self._ensure_online(X.shape[1])
            warming = not self._online.initialised
            keep = self._score_and_learn(X, columns, position)
            # flagged records stay out of the refit sample: BIC should not be asked to model outliers;
            # the warm-up's rows enter it once its fit has accepted them
            if not warming:
                self.reservoir.add(X if keep.all() else X[keep])
            elif self._online.initialised:
                self.reservoir.add(self._warm_up_rows_kept)
                self._warm_up_rows_kept = None
        self._after_batch(n_good + len(rejects), before, rejects, time.perf_counter() - t0)
        # cadences count good records, so bad records mixed in leave refits and checkpoints in place
        self._since_refit += n_good
        self._since_checkpoint += n_good
        if self.refit_every and self._since_refit >= self.refit_every and self._online.initialised:
            try:
                self.refit_now()
            except ValueError as exc:   # a reservoir no candidate can fit: keep the online model
                warnings.warn(f"refit skipped at record {self.summary.good}: {exc}", RuntimeWarning,
                              stacklevel=2)
                self._since_refit = 0
        if self._pending is not None:
            self._finish_checkpoint(block=False)
        if self.store is not None and self._since_checkpoint >= self.checkpoint_every:
            self.checkpoint(wait=False)

    def _score_and_learn(self, X: np.ndarray, columns: dict[str, Any], position: Any) -> np.ndarray:
        """Score the batch, learn it, and write its score records as columns.

        Returns the rows that may enter the refit sample (neither flagged nor refused), shape (n,).
        """
        online = self._online
        n = X.shape[0]
        flags = np.zeros(n, dtype=bool)
        learned = [n]
        base = self.summary.good - n          # id of the first row: good records before this batch
        ids = np.arange(base, base + n, dtype=np.int64)
        warming = not online.initialised

        def decide(log_p: np.ndarray) -> np.ndarray:
            if self.anomaly is not None:
                flags[:] = self.anomaly.flag_many(-log_p)
            mask = ~flags if self.anomaly_policy == "protect" else np.ones_like(flags)
            learned[0] = int(mask.sum())
            return mask

        try:
            fused, skip_above = self._skip_rule(n)
            if fused:
                out, refused = online.score_learn(X, skip_above=skip_above, ids=ids)
                if out is not None:
                    decide(out[1])
            else:
                out, refused = online.score_then_learn(X, decide, ids=ids)
                if out is not None:
                    out = (np.exp(out[0]), out[1])
        except ValueError as exc:
            # the core could not learn the batch and could name no record for it (it leaves its
            # state as it was): the whole batch goes to the dead letters, and the stream goes on
            out, learned[0], flags[:] = None, n, False
            refused = [(int(i), f"the model could not learn the batch holding this record: {exc}")
                       for i in ids.tolist()]
        self.summary.learned += learned[0]
        self.summary.n_components = online.n_components if online.initialised else None
        keep = np.ones(n, dtype=bool)
        if refused:
            keep = self._quarantine(refused, X, ids, columns, position)
            X, columns, flags = X[keep], take_columns(columns, keep), flags[keep]
            if out is not None:
                out = (out[0][keep], out[1][keep])
            n = X.shape[0]
        if warming:
            self._remember_warm_up(X, ids[keep], columns, online.initialised, refused)
        self.summary.anomalies += int(flags.sum())
        if out is not None:
            finite = np.isfinite(out[1])
            kept = finite & ~flags
            self._batch_loglik = (int(finite.sum()), float(out[1][finite].sum()), int(kept.sum()),
                                  float(out[1][kept].sum()))
        if flags.any():
            self.timeline.add_flagged(X[flags])
        keep[keep] = ~flags
        scores_sink, anomalies_sink = self.sinks["scores"], self.sinks["anomalies"]
        if scores_sink is None and anomalies_sink is None:
            return keep
        cols = score_columns(columns, out, flags, X, self._labels,
                             responsibilities=self.include_responsibilities,
                             features=self.include_features)
        if scores_sink is not None:
            scores_sink.write_columns(cols)
        if anomalies_sink is not None and flags.any():
            anomalies_sink.write_columns(take_columns(cols, flags))
        return keep

    def _skip_rule(self, n: int) -> tuple[bool, float | None]:
        """Whether the next batch of ``n`` records can take the one-pass step, and its skip rule.

        The one pass (:meth:`OnlineEM.score_learn`) needs to know, before it scores, which scores
        keep a record out of the model: none (no threshold, or the ``flag`` policy, or a quantile
        still short of ``min_samples`` for the whole batch) or those above the threshold as it stood
        before the batch. Only the batch in which a quantile reaches ``min_samples`` compares part
        of its records with a threshold made within it: it takes the two-pass step.
        """
        a = self.anomaly
        if a is None or self.anomaly_policy != "protect":
            return True, None
        if a.active_:
            return True, float(a.threshold_)
        if a.n_seen_ + n <= a.min_samples:
            return True, None
        return False, None

    def _after_batch(self, n_read: int, before: tuple[int, int, int, int], rejects: list,
                     seconds: float) -> None:
        """Count the batch in the timeline and tell the observers (``before``: good, rejected,
        anomalies and learned counted before it)."""
        s = self.summary
        good, rejected, flagged = s.good - before[0], s.rejected - before[1], s.anomalies - before[2]
        threshold = None
        if self.anomaly is not None and self.anomaly.active_:
            threshold = float(self.anomaly.threshold_)
        scored, sum_loglik, scored_kept, sum_loglik_kept = self._batch_loglik
        now = time.time()
        self.timeline.add_batch(records=n_read, good=good, rejected=rejected, flagged=flagged,
                                scored=scored, sum_loglik=sum_loglik, scored_kept=scored_kept,
                                sum_loglik_kept=sum_loglik_kept, k=s.n_components,
                                threshold=threshold, records_end=s.records, good_end=s.good,
                                seconds=seconds, time=now)
        if self.observers:
            self._notify("batch", {"records": n_read, "good": good, "rejected": rejected,
                                   "flagged": flagged, "learned": s.learned - before[3],
                                   "reasons": [r.reason for r in rejects],
                                   "refused": rejected - len(rejects), "scored": scored,
                                   "mean_loglik": sum_loglik / scored if scored else None,
                                   "threshold": threshold, "n_components": s.n_components,
                                   "seconds": seconds})

    def _notify(self, event: str, fields: dict[str, Any]) -> None:
        for observer in self.observers:
            observer(event, fields)

    def _quarantine(self, refused: list[tuple[int, str]], X: np.ndarray, ids: np.ndarray,
                    columns: dict[str, Any], position: Any) -> np.ndarray:
        """Dead-letter the records the model refused; returns the rows of this batch that remain.

        A record refused by the warm-up fit may come from an earlier batch: it was written to the
        scores as warming up, and its position comes from the warm-up's record of positions.
        """
        s = self.summary
        why = dict(refused)
        here = np.isin(ids, np.fromiter(why, dtype=np.int64, count=len(why)))
        rejects = []
        for i in np.flatnonzero(here).tolist():
            meta = {k: v for k, v in records_from_columns(take_columns(columns, [i]))[0].items()}
            rejects.append(Reject(why[int(ids[i])], values_raw(X[i]), meta))
        earlier = sorted(set(why) - set(ids[here].tolist()))
        if earlier:
            where = {rid: (block, j) for block in (self._warm_up_meta or [])
                     for j, rid in enumerate(block["ids"])}
            for rid in earlier:
                if rid in where:
                    block, j = where[rid]
                    meta, raw = dict(zip(block["keys"], block["rows"][j])), values_raw(np.asarray(block["x"][j]))
                else:
                    meta, raw = {"record": rid}, b""
                rejects.append(Reject(why[rid], raw, {**meta, "refused_after": "warm-up fit"}))
        s.good -= len(rejects)
        s.rejected += len(rejects)
        s.learned -= len(rejects)
        if self.sinks["dead_letters"] is not None:
            self.sinks["dead_letters"].write_rejects(rejects, position)
        return ~here

    def _remember_warm_up(self, X: np.ndarray, ids: np.ndarray, columns: dict[str, Any],
                          done: bool, refused: list[tuple[int, str]]) -> None:
        """Keep the positions and values of the rows buffered by the warm-up (its fit may refuse one
        of them later); once the fit is made, the rows it kept are handed to the refit sample."""
        blocks = self._warm_up_meta or []
        if done:
            gone = {rid for rid, _ in refused}
            rows = [x for b in blocks for rid, x in zip(b["ids"], b["x"]) if rid not in gone] + X.tolist()
            self._warm_up_rows_kept = np.asarray(rows, dtype=np.float64).reshape(-1, X.shape[1])
            self._warm_up_meta = None
            return
        # one block per batch: its column names in order, one list of values per row (JSON keeps
        # lists in order, so a resumed job writes the same dead letters)
        keys = list(columns)
        rows = list(map(list, zip(*(columns[k].tolist() for k in keys)))) if keys else [[]] * len(ids)
        self._warm_up_meta = blocks + [{"keys": keys, "ids": ids.tolist(), "rows": rows, "x": X.tolist()}]

    # ------------------------------------------------------------------------------ refits
    def refit_now(self) -> dict[str, Any]:
        """Refit the reservoir for every candidate K now; returns the BIC history row."""
        online = self._online
        k = online.n_components
        cands = self.refit_candidates or sorted({max(1, k - 1), k, k + 1})
        cands = [c for c in cands if c <= self.reservoir.data().shape[0]]
        result = self.refit_fn(
            self.reservoir.data(), online.stats, cands, covariance_type=online.covariance_type,
            reg_covar=online.reg_covar, tol=self.model.tol, max_iter=self.refit_max_iter,
            n_init=self.refit_n_init, rng=int(self._refit_rng.randint(np.iinfo(np.int32).max)),
            params=online.params,
            criterion=self.refit_criterion, labels=self._labels, next_label=self._next_label or None,
            n_seen=self.summary.good)
        result.apply_to(online)
        self._labels = np.asarray(result.matching.labels)
        self._next_label = int(result.matching.next_label)
        self.history.append(result.row)
        self.timeline.add_refit(self.history.rows[-1])
        self.summary.refits += 1
        self.summary.n_components = online.n_components
        self._since_refit = 0
        if self.observers:
            self._notify("refit", {"row": self.history.rows[-1]})
        return result.row

    # ------------------------------------------------------------------------------ checkpoints
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

    def close(self) -> None:
        """Close the source and every sink, then release the checkpoint directory's lock."""
        try:
            try:
                self._finish_checkpoint()
            finally:
                self.source.close()
            for sink in self.sinks.values():
                if sink is not None:
                    sink.close()
        finally:
            if self.store is not None:
                self.store.unlock()


def load_online(path: str | Any) -> tuple[Any, ModelSpec, dict[str, Any], dict[str, Any]]:
    """The fitted online state of a pipeline checkpoint (file or directory), without scikit-learn.

    Works for one-process and scaled-out jobs' checkpoints alike.

    Returns
    -------
    online : online_gmm._online.OnlineEM
    spec : ModelSpec
        The model's parameters, with ``n_components`` the current K.
    meta : dict
        The checkpoint's metadata (counters, feature names, ...).
    parts : dict
        The checkpoint's parts, ``{name: (arrays, meta)}`` (model, sample, history).

    Raises
    ------
    CheckpointError
        No checkpoint, no model yet, or a model still warming up.
    """
    from pathlib import Path

    from online_gmm.checkpoint import CheckpointError, read_checkpoint
    p = Path(path)
    if p.is_dir():
        loaded = CheckpointStore(p).load_latest()
        if loaded is None:
            raise CheckpointError(f"no checkpoint in {str(p)!r}")
        arrays, meta, _ = loaded
    else:
        arrays, meta = read_checkpoint(p)
    parts = unpack(arrays, meta["parts"])
    if "model" not in parts:
        raise CheckpointError(f"{path}: the checkpoint holds no model yet")
    spec = ModelSpec(**{**meta["model_params"], "n_components": int(meta["n_components"])})
    online = spec._new_online(int(meta["n_features"]), check_random_state(spec.random_state))
    online.n_components = int(meta["n_components"])
    online.load_arrays(*parts["model"])
    if not online.initialised:
        raise CheckpointError(f"{path}: the model is still warming up")
    return online, spec, meta, parts


def load_model(path: str) -> tuple[OnlineGaussianMixture, dict[str, Any], dict[str, Any]]:
    """A fitted :class:`OnlineGaussianMixture` from a pipeline checkpoint (file or directory).

    Returns
    -------
    model : OnlineGaussianMixture
    meta : dict
        The checkpoint's metadata (counters, feature names, ...).
    parts : dict
        The checkpoint's parts, ``{name: (arrays, meta)}`` (model, reservoir, history).
    """
    online, spec, meta, parts = load_online(path)
    return spec.estimator()._adopt(online), meta, parts


def fingerprint(cfg: Mapping[str, Any]) -> str:
    """A short hash of the settings that change what the model's state means.

    A checkpoint written under one fingerprint is refused under another: the model, the fields read,
    the batch size (batch boundaries), the anomaly and refit settings. Where the job stops
    (``max_records``), what the outputs include, and where refits run (``dask_scheduler``) may change
    between runs.
    """
    relevant = {
        "model": cfg.get("model"),
        "fields": cfg.get("source", {}).get("fields") or cfg.get("source", {}).get("columns"),
        "batch_size": cfg.get("pipeline", {}).get("batch_size"),
        "anomaly": cfg.get("anomaly"),
        "refit": {k: v for k, v in cfg.get("refit", {}).items() if k != "dask_scheduler"},
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]
