"""Stepwise (online) EM state, shared by the scikit-learn estimator, the River learners and the pipeline.

:class:`OnlineEM` holds the sufficient statistics, the parameters computed from them, the schedule's
clock and the warm-up buffer. :meth:`OnlineEM.update` is one stepwise EM update: an E-step of the batch
under the current parameters, a blend of the batch's statistics into the running ones with the
schedule's share, and an M-step. Nothing is committed until the new parameters are known to be finite,
so a failed update leaves the state as it was.

Records that the update cannot use are kept out of it, each with a reason (:data:`Refused`):

- a value with ``|x| > MAX_ABS`` (1e150) is refused before any arithmetic (:func:`screen_extreme`:
  two vectorised reductions per batch; per-row work only when one fails);
- when an update (or the warm-up fit) is ill-defined (a failed Cholesky factorisation, non-finite
  statistics or parameters), the culprits are searched for, deterministically: the candidate rows
  are ordered from least to most plausible (log-density under the current parameters; robust
  distance from the median in the warm-up) and a bisection finds the fewest of the first ones whose
  exclusion makes the update well-defined. The rest is learned; nothing is committed before that.
  The search runs only after a failure: a clean batch is one update, as before.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from online_gmm._em import EMResult, GaussianParams, Scorer
from online_gmm._guards import (
    MAX_ABS,
    SCALE_LIMIT,
    Refused,
    RefusedRecordsError,
    _bisect,
    _check_scale,
    _mixture_variances,
    _refusal,
    _trimmed_variances,
    rng_state_from_json,
    rng_state_to_json,
    screen_extreme,
)
from online_gmm._schedule import StepSchedule
from online_gmm._suffstats import SufficientStatistics

__all__ = ["MAX_ABS", "SCALE_LIMIT", "ComponentReseededWarning", "OnlineEM", "Refused",
           "RefusedRecordsError", "rng_state_from_json", "rng_state_to_json", "screen_extreme"]


#: growth of the warm-up buffer after which a provisional fit starts afresh (see
#: :meth:`OnlineEM.provisional`)
_PROVISIONAL_GROWTH = 1.25


class ComponentReseededWarning(UserWarning):
    """A component's weight collapsed and it was moved to poorly explained points."""


class OnlineEM:
    """The state of stepwise EM.

    Parameters
    ----------
    n_components : int
    covariance_type : str
    reg_covar : float
    schedule : StepSchedule
    warm_up : int
        Sample weight buffered before the first M-step.
    initialise : callable(X, sample_weight) -> EMResult
        Batch EM on the warm-up buffer (several candidate starts).
    min_weight : float
        A component whose mixing weight falls below this is re-seeded.
    rng : numpy.random.RandomState
        For the choice of re-seeding points.
    """

    def __init__(self, n_components: int, covariance_type: str, reg_covar: float,
                 schedule: StepSchedule, warm_up: int,
                 initialise: Callable[[np.ndarray, np.ndarray | None], EMResult],
                 min_weight: float, rng: np.random.RandomState) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.schedule = schedule
        self.warm_up = warm_up
        self.initialise = initialise
        self.min_weight = min_weight
        self.rng = rng
        self.stats: SufficientStatistics | None = None
        self.params: GaussianParams | None = None
        self.t = 0.0                 # sample weight on the schedule's clock
        self.n_seen = 0              # records learned (including those in the warm-up buffer)
        self.weight_seen = 0.0       # total sample weight learned
        self.n_updates = 0
        self.reseeds: list[tuple[int, int]] = []   # (n_seen at the time, component)
        self._buf_X: list[np.ndarray] = []
        self._buf_w: list[np.ndarray] = []
        self._buf_ids: list[np.ndarray] = []      # the ids the buffered rows were given
        self._scorer: Scorer | None = None
        self._buf_version = 0        # bumped whenever the buffer changes (the provisional fit's key)
        self._provisional: tuple | None = None    # see provisional()

    # ------------------------------------------------------------------ state
    @property
    def initialised(self) -> bool:
        return self.params is not None

    @property
    def buffered(self) -> float:
        return float(sum(w.sum() for w in self._buf_w))

    def scorer(self) -> Scorer:
        """A :class:`Scorer` for the current parameters (cached until they change)."""
        if self._scorer is None or self._scorer.params is not self.params:
            if self.params is None:
                raise RuntimeError("the model has no parameters yet (still warming up)")
            self._scorer = Scorer(self.params)
        return self._scorer

    def provisional(self) -> tuple[SufficientStatistics, GaussianParams] | None:
        """A model of the rows buffered so far, for predictions before the warm-up ends.

        A short stream (fewer rows than the warm-up) still gets a model as soon as ``n_components``
        rows are buffered. The buffer is fitted as at the end of the warm-up (batch EM, the warm-up's
        starts); while it grows by less than a factor of two since that fit, later calls refine the
        previous provisional parameters by EM on the whole buffer instead (a few iterations), so
        that asking after every small batch costs about one fresh fit per doubling. The state is not
        changed: the buffer, the clock and the random state (restored after the fit) are those of a
        stream where nobody asked, and the warm-up ends exactly as it would have.

        Returns
        -------
        (SufficientStatistics, GaussianParams) or None
            The buffer's statistics (not decayed by the schedule) and their M-step; None while fewer
            than ``n_components`` rows are buffered, after the warm-up, or when the buffer cannot be
            fitted (e.g. an extreme record that the warm-up's end would refuse).
        """
        if self.initialised:
            return None
        rows = sum(len(b) for b in self._buf_X)
        if rows < self.n_components or self.buffered <= 0:
            return None
        cached = getattr(self, "_provisional", None)
        if cached is not None and cached[0] == self._buf_version:
            return cached[2]
        from online_gmm._em import run_em

        Xb, wb = np.concatenate(self._buf_X), np.concatenate(self._buf_w)
        w = None if bool(np.all(wb == 1.0)) else wb
        state = self.rng.get_state()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if cached is None or cached[2] is None or rows >= _PROVISIONAL_GROWTH * cached[1]:
                    result, fresh, anchor = self.initialise(Xb, w), rows, None
                else:
                    # EM from the last fresh fit's parameters (not from the last refinement: the
                    # answer depends on when the caller asked only through that fit)
                    fresh, anchor = cached[1], cached[3]
                    result = run_em(Xb, anchor, reg_covar=self.reg_covar,
                                    tol=getattr(self.initialise, "tol", 1e-3),
                                    max_iter=max(1, getattr(self.initialise, "max_iter", 100)),
                                    sample_weight=w)
            stats = result.stats
            if stats is None:                   # max_iter == 0
                stats, _ = Scorer(result.params).expected_statistics(Xb, w)
            params = stats.to_params(self.reg_covar)
            if not (stats.is_finite() and params.is_finite()):
                raise ValueError("non-finite provisional fit")
            _check_scale(params, _trimmed_variances(Xb, self.reg_covar))
            out: tuple[SufficientStatistics, GaussianParams] | None = (stats, params)
            if anchor is None:
                anchor = params
        except ValueError:
            out, fresh, anchor = None, rows, None
        finally:
            self.rng.set_state(state)
        self._provisional = (self._buf_version, fresh, out, anchor)
        return out

    def set_state(self, stats: SufficientStatistics, params: GaussianParams, t: float) -> None:
        """Install statistics and their parameters (after a batch fit, a refit, or a merge)."""
        self.stats = stats
        self.params = params
        self.t = float(t)
        self._scorer = None

    # ------------------------------------------------------------------ learning
    def update(self, X: np.ndarray, sample_weight: np.ndarray | None = None, *,
               ids: np.ndarray | None = None, on_refused: str = "raise",
               screened: bool = False) -> list[Refused]:
        """Learn a batch: buffer it while warming up, otherwise one stepwise EM update.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features), finite
        sample_weight : ndarray of shape (n_samples,) or None
        ids : ndarray of int64 of shape (n_samples,), optional
            Names of the rows in the refusals (default: their indices in ``X``). Buffered warm-up
            rows keep theirs, so a refusal at the end of the warm-up may name rows of earlier calls.
        on_refused : {'raise', 'skip'}, default='raise'
            'raise': if any record of ``X`` must be kept out, raise :class:`RefusedRecordsError`
            naming them all, and leave the state unchanged (culprits of a failed warm-up fit that
            are all rows of earlier calls are dropped from the buffer and returned instead: the
            caller cannot take them back). 'skip': learn the rest and return the refusals.
        screened : bool, default=False
            The caller has checked that every value lies within +-:data:`MAX_ABS` (the screen is
            skipped).

        Returns
        -------
        list of (id, reason)
            The records kept out of the model (empty with ``on_refused='raise'``).
        """
        n = X.shape[0]
        if n == 0:
            return []
        # the ids and weights are formed only where they are needed: a clean update pays nothing
        if not (screened and self.initialised):
            ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        keep, refused = (None, []) if screened else screen_extreme(X, ids)
        if refused:
            if on_refused == "raise":
                raise _refusal(refused)
            X, ids = X[keep], ids[keep]
            sample_weight = None if sample_weight is None else sample_weight[keep]
            if X.shape[0] == 0:
                return refused
        if not self.initialised:
            w = np.ones(X.shape[0]) if sample_weight is None else sample_weight
            return refused + self._buffer(X, w, ids, on_refused)
        try:
            self.step(X, sample_weight)
        except ValueError as err:
            if ids is None:
                ids = np.arange(X.shape[0], dtype=np.int64)
            else:
                ids = np.asarray(ids, dtype=np.int64)
            log_resp, log_p = self.scorer().log_resp(X)
            refused += self._guarded_step(X, sample_weight, ids, log_resp, log_p, err, on_refused)
        return refused

    def _buffer(self, X: np.ndarray, w: np.ndarray, ids: np.ndarray, on_refused: str) -> list[Refused]:
        """Buffer warm-up rows; fit the buffer when it is full (culprits of a failed fit removed)."""
        self._buf_X.append(np.array(X, dtype=np.float64, copy=True))
        self._buf_w.append(np.array(w, dtype=np.float64, copy=True))
        self._buf_ids.append(np.array(ids, dtype=np.int64, copy=True))
        self._buf_version += 1
        self.n_seen += X.shape[0]
        self.weight_seen += float(w.sum())
        if not (self.buffered >= self.warm_up and sum(len(b) for b in self._buf_X) >= self.n_components):
            return []
        rng_state = self.rng.get_state()
        try:
            self._finish_warm_up()
            return []
        except ValueError as err:
            first_error = err
        Xb, wb = np.concatenate(self._buf_X), np.concatenate(self._buf_w)
        idb = np.concatenate(self._buf_ids)
        # least plausible first: the largest robust distance from the median in any feature
        med = np.median(Xb, axis=0)
        dev = np.abs(Xb - med)
        mad = np.median(dev, axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.max(dev / np.maximum(mad, np.finfo(float).tiny), axis=1)
        order = np.argsort(-z, kind="stable")
        ok = np.ones(len(Xb), dtype=bool)

        def fits(k: int) -> bool:
            mask = ok.copy()
            mask[order[:k]] = False
            self.rng.set_state(rng_state)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._fit_buffer(Xb[mask], wb[mask])
                return True
            except ValueError:
                return False

        k = _bisect(fits, 0, max(0, len(Xb) - self.n_components))
        self.rng.set_state(rng_state)
        if k is None:                                   # not caused by a few records
            self._unbuffer_last()
            raise first_error
        bad = order[:k]
        what = "non-finite" if "non-finite" in str(first_error) else "ill-defined covariances"
        refused = [(int(idb[i]), (f"learning this record would give the warm-up fit {what} (the "
                                  f"record lies {z[i]:.3g} median absolute deviations from the "
                                  "buffer's median)"))
                   for i in np.sort(bad).tolist()]
        if on_refused == "raise" and np.isin(idb[bad], self._buf_ids[-1]).any():
            self._unbuffer_last()
            raise _refusal(refused)
        keep = ok
        keep[bad] = False
        self._buf_X, self._buf_w, self._buf_ids = [Xb[keep]], [wb[keep]], [idb[keep]]
        self._buf_version += 1
        self.n_seen -= int(bad.size)
        self.weight_seen -= float(wb[bad].sum())
        # as in a stream without the culprits: the warm-up ends once enough rows are buffered
        if self.buffered >= self.warm_up:
            self._finish_warm_up()
        return refused

    def _unbuffer_last(self) -> None:
        self._buf_version += 1
        X, w = self._buf_X.pop(), self._buf_w.pop()
        self._buf_ids.pop()
        self.n_seen -= X.shape[0]
        self.weight_seen -= float(w.sum())

    def _fit_buffer(self, Xb: np.ndarray, wb: np.ndarray) -> tuple[SufficientStatistics, GaussianParams, float]:
        """The warm-up fit of buffered rows: statistics, parameters (their M-step) and the clock."""
        uniform = bool(np.all(wb == 1.0))
        result = self.initialise(Xb, None if uniform else wb)
        stats = result.stats
        if stats is None:  # max_iter == 0: statistics under the starting parameters
            stats, _ = Scorer(result.params).expected_statistics(Xb, None if uniform else wb)
        t = float(wb.sum())
        n_eff = self.schedule.n_eff(t)
        if stats.total_weight > 0:
            stats.decay(n_eff / stats.total_weight)
        # parameters are always the M-step of the statistics, so a reload reproduces them exactly
        params = stats.to_params(self.reg_covar)
        if not (stats.is_finite() and params.is_finite()):
            raise ValueError("the warm-up fit produced non-finite parameters")
        _check_scale(params, _trimmed_variances(Xb, self.reg_covar))
        return stats, params, t

    def _finish_warm_up(self) -> None:
        stats, params, t = self._fit_buffer(np.concatenate(self._buf_X), np.concatenate(self._buf_w))
        self.set_state(stats, params, t)
        self._buf_X.clear()
        self._buf_w.clear()
        self._buf_ids.clear()
        self._provisional = None
        self.n_updates += 1

    def _propose(self, X: np.ndarray, sample_weight: np.ndarray | None,
                 batch: tuple[SufficientStatistics, float] | None, extra: tuple[int, float],
                 candidates: np.ndarray | None = None):
        """The new state of one stepwise update, not committed (raises ValueError if ill-defined)."""
        assert self.stats is not None and self.params is not None
        n = X.shape[0] + int(extra[0])
        m = float(X.shape[0] if sample_weight is None else np.sum(sample_weight)) + float(extra[1])
        if batch is None:
            if extra[0]:
                raise ValueError("extra records need their statistics in batch")
            batch_stats, ll = self.scorer().expected_statistics(X, sample_weight)
        else:
            batch_stats, ll = batch
        if m <= 0:
            return None, None, [], n, m, ll
        a, b = self.schedule.coefficients(self.t, m, self.stats.total_weight)
        new = self.stats.scale(a)
        new += batch_stats.scale(b)
        params = new.to_params(self.reg_covar)
        reseeded = self._reseed_collapsed(new, params, X if candidates is None else candidates)
        if reseeded:
            params = new.to_params(self.reg_covar)
        if not (new.is_finite() and params.is_finite()):
            raise ValueError("the update produced non-finite parameters; the state was left unchanged")
        # A component can be stretched SCALE_LIMIT times the data's variance only by a record at
        # least sqrt(SCALE_LIMIT) of the data's standard deviations from every component, whose
        # squared Mahalanobis distance to each is then at least about SCALE_LIMIT * min_weight (a
        # component's variance is at most the data's over its weight): its log-density, hence the
        # batch's log-likelihood, is far below -1e-3 * SCALE_LIMIT * min_weight (-3e5 at the
        # defaults, where a clean batch of 1000 rows in 4-D sums to about -6e3). Above that, the
        # check cannot fail and is skipped: a clean batch pays one comparison.
        if not ll >= -1e-3 * SCALE_LIMIT * max(self.min_weight, 1e-12):
            _check_scale(params, self._data_variances())
        return new, params, reseeded, n, m, ll

    def _data_variances(self) -> np.ndarray:
        """The current mixture's variance of each feature (floored at reg_covar), cached per
        parameter set: the reference scale of :data:`SCALE_LIMIT`."""
        cached = getattr(self, "_ref_var", None)
        if cached is None or cached[0] is not self.params:
            cached = (self.params, np.maximum(_mixture_variances(self.params), self.reg_covar))
            self._ref_var = cached
        return cached[1]

    def step(self, X: np.ndarray, sample_weight: np.ndarray | None = None,
             batch: tuple[SufficientStatistics, float] | None = None,
             extra: tuple[int, float] = (0, 0.0), candidates: np.ndarray | None = None) -> float:
        """One stepwise EM update from a batch; returns the batch's summed log-likelihood.

        Raises ValueError, with the state unchanged, if the update is ill-defined (see
        :meth:`update` and :meth:`score_then_learn` for the guarded forms that find the culprits).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            The batch's complete rows (also the candidates for re-seeding a collapsed component).
        sample_weight : ndarray of shape (n_samples,), optional
        batch : (SufficientStatistics, float), optional
            The batch statistics already computed under the current parameters.
        extra : (int, float)
            Records and sample weight in ``batch`` beyond the rows of ``X`` (e.g. incomplete records
            learned through their conditional expectations); they count in the schedule's clock.
        candidates : ndarray of shape (n_candidates, n_features), optional
            Where a collapsed component may be re-seeded (default: the rows of ``X``); e.g. a sample
            of the stream when the batch's records are elsewhere (the scaled-out coordinator).
        """
        new, params, reseeded, n, m, ll = self._propose(X, sample_weight, batch, extra, candidates)
        if new is None:
            self.n_seen += n
            return ll
        self.set_state(new, params, self.t + m)
        self.n_seen += n
        self.weight_seen += m
        self.n_updates += 1
        for k in reseeded:
            self.reseeds.append((self.n_seen, k))
        return ll

    def _guarded_step(self, X: np.ndarray, sample_weight: np.ndarray | None, ids: np.ndarray,
                      log_resp: np.ndarray, log_p: np.ndarray, error: ValueError,
                      on_refused: str) -> list[Refused]:
        """After a failed update of ``X``: find the culprits, then update with the rest (or raise).

        The rows are ordered by log-density (least plausible first, stable); a bisection finds the
        fewest first rows whose exclusion makes the update well-defined (excluding all of them is
        always well-defined: the update is then a no-op). Deterministic, so a replay of the same
        state and batch refuses the same rows.
        """
        order = np.argsort(log_p, kind="stable")
        w = np.ones(X.shape[0]) if sample_weight is None else sample_weight
        ctype = self.covariance_type

        def batch_of(mask: np.ndarray) -> tuple[SufficientStatistics, float]:
            resp = np.exp(log_resp[mask])
            stats = SufficientStatistics.from_resp(X[mask], resp, None if sample_weight is None
                                                   else w[mask], covariance_type=ctype)
            return stats, float(log_p[mask] @ w[mask])

        def mask_of(k: int) -> np.ndarray:
            mask = np.ones(X.shape[0], dtype=bool)
            mask[order[:k]] = False
            return mask

        def works(k: int) -> bool:
            mask = mask_of(k)
            if not mask.any():
                return True
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._propose(X[mask], None if sample_weight is None else w[mask], batch_of(mask),
                                  (0, 0.0))
                return True
            except ValueError:
                return False

        k = _bisect(works, 0, X.shape[0])
        assert k is not None
        bad = np.sort(order[:k])
        params = self.params
        prep = params.prepared()
        what = "non-finite" if "non-finite" in str(error) else "ill-defined"
        refused = []
        for i in bad.tolist():
            c = int(np.argmax(log_resp[i]))
            wlp = log_resp[i, c] + log_p[i]
            q = 2.0 * (prep["const"][c] + prep["logw"][c] - wlp)
            dist = float(np.sqrt(q)) if np.isfinite(q) and q >= 0 else float("inf")
            why = (f"learning this record would make component {c}'s covariance {what} (the record "
                   f"lies {dist:.3g} standard deviations from that component's mean)")
            refused.append((int(ids[i]), why))
        if on_refused == "raise":
            raise _refusal(refused)
        mask = mask_of(k)
        if mask.any():
            self.step(X[mask], None if sample_weight is None else w[mask], batch=batch_of(mask))
        return refused

    def score_then_learn(self, X: np.ndarray, learn: Callable[[np.ndarray], np.ndarray] | None = None,
                         *, ids: np.ndarray | None = None, report_refused: bool = False):
        """Prequential step: score a batch under the current parameters, then learn it, one E-step.

        Records that would make the update ill-defined, and values beyond :data:`MAX_ABS`, are kept
        out of the model (see the module docstring); they are scored like any other record.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features), finite
        learn : callable(log_p) -> bool ndarray of shape (n_samples,), optional
            Given the scores, which rows to learn (all when omitted); e.g. skip flagged anomalies.
        ids : ndarray of int64 of shape (n_samples,), optional
            Names of the rows in the refusals (default: their indices in ``X``). Rows buffered by the
            warm-up keep their ids (also through :meth:`to_arrays`), so the refusals at the end of the
            warm-up may name rows of earlier calls.
        report_refused : bool, default=False
            Return ``(out, refused)``; implied by ``ids``. Without either, a batch with a record to
            keep out raises :class:`RefusedRecordsError` (a ValueError naming them) and the state is
            unchanged.

        Returns
        -------
        out : (log_resp, log_p) or None
            Computed before learning, of shapes (n_samples, K) and (n_samples,); ``None`` while
            warming up (the rows are buffered and learned at the end of the warm-up).
        refused : list of (id, reason)
            Only with ``ids`` or ``report_refused``: the records kept out of the model, in id order
            per cause (too large first, then those found by the search).
        """
        report = report_refused or ids is not None
        mode = "skip" if report else "raise"
        n = X.shape[0]
        ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        if ids.shape != (n,):
            raise ValueError(f"ids must have shape ({n},), got {ids.shape}")
        if not self.initialised:
            refused = self.update(X, ids=ids, on_refused=mode)
            return (None, refused) if report else None
        log_resp, log_p = self.scorer().log_resp(X)
        mask = np.ones(n, dtype=bool) if learn is None else np.asarray(learn(log_p), dtype=bool)
        keep, refused = screen_extreme(X, ids)
        if refused:                      # only the rows that were to be learned are refused
            refused = [r for r, i in zip(refused, np.flatnonzero(~keep).tolist()) if mask[i]]
            mask &= keep
            if refused and not report:
                raise _refusal(refused)
        if mask.all():
            Xl, lr, lp, il = X, log_resp, log_p, ids
        else:
            Xl, lr, lp, il = X[mask], log_resp[mask], log_p[mask], ids[mask]
        if Xl.shape[0]:
            stats = SufficientStatistics.from_resp(Xl, np.exp(lr), covariance_type=self.covariance_type)
            try:
                self.step(Xl, batch=(stats, float(lp.sum())))
            except ValueError as err:
                refused = refused + self._guarded_step(Xl, None, il, lr, lp, err, mode)
        out = (log_resp, log_p)
        return (out, refused) if report else out

    def score_learn(self, X: np.ndarray, *, skip_above: float | None = None,
                    ids: np.ndarray | None = None) -> tuple[tuple[np.ndarray, np.ndarray] | None, list]:
        """The pipeline's prequential step in one pass: score a batch, then learn it.

        What :meth:`score_then_learn` does with ``learn=lambda log_p: ~((-log_p > skip_above) |
        (-log_p == inf))``, but the scores and the statistics come from one read of the batch
        (:meth:`Scorer.score_statistics`), and responsibilities are returned instead of their logs.
        A batch with a value beyond :data:`MAX_ABS`, the warm-up, and an update found ill-defined
        take :meth:`score_then_learn`'s path (same records learned, same refusals).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features), finite
        skip_above : float, optional
            Rows whose score ``-log p(x)`` is above it, or ``+inf``, are scored but not learned;
            None: every row is learned.
        ids : ndarray of int64 of shape (n_samples,), optional
            Names of the rows in the refusals (default: their indices in ``X``).

        Returns
        -------
        out : (resp, log_p) or None
            Of shapes (n_samples, K) and (n_samples,), under the parameters before the batch was
            learned; None while warming up.
        refused : list of (id, reason)
        """
        n = X.shape[0]
        ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        if not self.initialised or screen_extreme(X, ids)[1]:
            def learn(log_p: np.ndarray) -> np.ndarray:
                if skip_above is None:
                    return np.ones(log_p.shape[0], dtype=bool)
                return (-log_p <= skip_above) & (log_p > -np.inf)
            out, refused = self.score_then_learn(X, learn, ids=ids)
            return (None if out is None else (np.exp(out[0]), out[1])), refused
        resp, log_p, learned, stats, ll = self.scorer().score_statistics(X, skip_above)
        Xl = X if learned is None else X[learned]
        refused: list = []
        if Xl.shape[0]:
            try:
                self.step(Xl, batch=(stats, ll))
            except ValueError as err:         # rare: find the culprits on the logs of the scores
                il = ids if learned is None else ids[learned]
                lr, lp = self.scorer().log_resp(Xl)
                refused = self._guarded_step(Xl, None, il, lr, lp, err, "skip")
        return (resp, log_p), refused

    def _reseed_collapsed(self, stats: SufficientStatistics, params: GaussianParams,
                          X: np.ndarray) -> list[int]:
        """Move components whose weight fell below ``min_weight`` to poorly explained points."""
        low = np.flatnonzero(params.weights < self.min_weight)
        if low.size == 0 or low.size == self.n_components or X.shape[0] == 0:
            return []
        log_p = Scorer(params).score_samples(X)
        order = np.argsort(log_p, kind="stable")       # worst explained first
        total = stats.total_weight
        share = total / self.n_components * 0.5
        for j, k in enumerate(low):
            x = X[order[j % len(order)]]
            healthy = np.flatnonzero(params.weights >= self.min_weight)
            # borrow the shape of the average healthy component, at a modest weight
            stats.means[k] = x
            if self.covariance_type == "tied":
                pass  # the pooled scatter stays; only the mean and weight move
            else:
                per_weight = stats.scatter[healthy] / np.maximum(stats.weights[healthy], 1e-300).reshape(
                    (-1,) + (1,) * (stats.scatter.ndim - 1))
                stats.scatter[k] = per_weight.mean(axis=0) * share
            stats.weights[k] = share
        warnings.warn(
            f"component(s) {low.tolist()} collapsed (weight < min_weight={self.min_weight!r}) and were "
            "re-seeded at poorly explained points",
            ComponentReseededWarning, stacklevel=4)
        return low.tolist()

    def __getstate__(self) -> dict[str, Any]:
        # the cached Scorer holds kernel functions and buffers: rebuilt on demand, never pickled
        state = self.__dict__.copy()
        state["_scorer"] = None
        state.pop("_ref_var", None)
        state.pop("_provisional", None)     # a cache, refitted on demand
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_buf_version", 0)
        if "_buf_ids" not in state:   # pickled before the buffered rows kept ids: -1, "unknown"
            self._buf_ids = [np.full(len(b), -1, dtype=np.int64) for b in self._buf_X]

    # ------------------------------------------------------------------ serialisation
    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Exact, pickle-free state: arrays plus JSON-able metadata (the warm-up buffer included)."""
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {"t": self.t, "n_seen": self.n_seen, "weight_seen": self.weight_seen,
                                "n_updates": self.n_updates, "reseeds": [list(r) for r in self.reseeds],
                                "rng": rng_state_to_json(self.rng)}
        if self.stats is not None:
            a, m = self.stats.to_arrays("stats.")
            arrays.update(a)
            meta["stats"] = m
        if self._buf_X:
            arrays["buffer.X"] = np.concatenate(self._buf_X)
            arrays["buffer.w"] = np.concatenate(self._buf_w)
            arrays["buffer.ids"] = np.concatenate(self._buf_ids)
        return arrays, meta

    def load_arrays(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Inverse of :meth:`to_arrays` (parameters are recomputed from the statistics)."""
        self.t = float(meta["t"])
        self.n_seen = int(meta["n_seen"])
        self.weight_seen = float(meta["weight_seen"])
        self.n_updates = int(meta["n_updates"])
        self.reseeds = [tuple(r) for r in meta["reseeds"]]
        rng_state_from_json(self.rng, meta["rng"])
        self._buf_X, self._buf_w, self._buf_ids = [], [], []
        self._buf_version += 1
        if "buffer.X" in arrays:
            self._buf_X.append(np.array(arrays["buffer.X"], dtype=np.float64))
            self._buf_w.append(np.array(arrays["buffer.w"], dtype=np.float64))
            # checkpoints written before the ids were kept: -1, "unknown"
            ids = arrays.get("buffer.ids")
            self._buf_ids.append(np.full(len(self._buf_X[0]), -1, dtype=np.int64) if ids is None
                                 else np.array(ids, dtype=np.int64))
        if "stats" in meta:
            stats = SufficientStatistics.from_arrays(arrays, meta["stats"], "stats.")
            self.set_state(stats, stats.to_params(self.reg_covar), self.t)
        else:
            self.stats = self.params = None
            self._scorer = None
