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

This module holds the run loop, the batch boundaries and the refits; the scoring and learning of a
batch are in :mod:`online_gmm._pipeline_scoring`, checkpoints and resuming in
:mod:`online_gmm._pipeline_state`, and reading a checkpoint back as a model (:func:`load_model`,
:func:`load_online`, re-exported here with :func:`fingerprint`) in :mod:`online_gmm._pipeline_loading`.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from connectors.deadletter import DeadLetterSink
from online_gmm._durable import DurableCheckpoint
from online_gmm._pipeline_loading import fingerprint, load_model, load_online  # noqa: F401 - re-exported
from online_gmm._pipeline_scoring import _ScoringMixin
from online_gmm._pipeline_state import _StateMixin
from online_gmm._reading import GoodRecords
from online_gmm.checkpoint import CheckpointStore
from online_gmm.model_spec import ModelSpec, check_random_state
from online_gmm.refit import BICHistory, Reservoir, refit
from online_gmm.timeline import Timeline

if TYPE_CHECKING:  # pragma: no cover - the estimator (scikit-learn) is imported where it is used
    from online_gmm.estimator import OnlineGaussianMixture

__all__ = ["Pipeline", "RunSummary"]


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


class Pipeline(_ScoringMixin, _StateMixin):
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

    # ------------------------------------------------------------------------------ close
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
