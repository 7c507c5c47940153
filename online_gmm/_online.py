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

The warm-up (its buffer, its fit and the provisional fit) is in :mod:`online_gmm._online_warmup`, the
prequential steps (score, then learn) in :mod:`online_gmm._online_prequential`; :class:`OnlineEM`
inherits them.
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
    rng_state_from_json,
    rng_state_to_json,
    screen_extreme,
)
from online_gmm._online_prequential import _PrequentialMixin
from online_gmm._online_warmup import _WarmUpMixin
from online_gmm._schedule import StepSchedule
from online_gmm._suffstats import SufficientStatistics

__all__ = ["MAX_ABS", "SCALE_LIMIT", "ComponentReseededWarning", "OnlineEM", "Refused",
           "RefusedRecordsError", "rng_state_from_json", "rng_state_to_json", "screen_extreme"]


class ComponentReseededWarning(UserWarning):
    """A component's weight collapsed and it was moved to poorly explained points."""


class OnlineEM(_WarmUpMixin, _PrequentialMixin):
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
        candidates : ndarray of shape (n_candidates, n_features), or a callable returning one, optional
            Where a collapsed component may be re-seeded (default: the rows of ``X``); e.g. a sample
            of the stream when the batch's records are elsewhere (the scaled-out coordinator), or
            the host copy of a batch on a device (``X`` is then only counted).
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

    def _reseed_collapsed(self, stats: SufficientStatistics, params: GaussianParams,
                          X: np.ndarray | Callable[[], np.ndarray]) -> list[int]:
        """Move components whose weight fell below ``min_weight`` to poorly explained points
        (``X``: the candidates, or a callable returning them, called only when one collapsed)."""
        low = np.flatnonzero(params.weights < self.min_weight)
        if low.size == 0 or low.size == self.n_components:
            return []
        if callable(X):                     # e.g. a batch on a device, fetched only when needed
            X = X()
        if X.shape[0] == 0:
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
