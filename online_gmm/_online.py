"""Stepwise (online) EM state, shared by the scikit-learn estimator, the River learners and the pipeline.

:class:`OnlineEM` holds the sufficient statistics, the parameters computed from them, the schedule's
clock and the warm-up buffer. :meth:`OnlineEM.update` is one stepwise EM update: an E-step of the batch
under the current parameters, a blend of the batch's statistics into the running ones with the
schedule's share, and an M-step. Nothing is committed until the new parameters are known to be finite,
so a failed update leaves the state as it was.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from online_gmm._em import EMResult, GaussianParams, Scorer
from online_gmm._schedule import StepSchedule
from online_gmm._suffstats import SufficientStatistics

__all__ = ["OnlineEM", "ComponentReseededWarning"]


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
        self._scorer: Scorer | None = None

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
    def update(self, X: np.ndarray, sample_weight: np.ndarray | None = None) -> None:
        """Learn a batch: buffer it while warming up, otherwise one stepwise EM update.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features), finite
        sample_weight : ndarray of shape (n_samples,) or None
        """
        n = X.shape[0]
        if n == 0:
            return
        w = np.ones(n) if sample_weight is None else sample_weight
        if not self.initialised:
            self._buf_X.append(np.array(X, dtype=np.float64, copy=True))
            self._buf_w.append(np.array(w, dtype=np.float64, copy=True))
            self.n_seen += n
            self.weight_seen += float(w.sum())
            if self.buffered >= self.warm_up and sum(len(b) for b in self._buf_X) >= self.n_components:
                self._finish_warm_up()
            return
        self.step(X, sample_weight)

    def _finish_warm_up(self) -> None:
        Xb = np.concatenate(self._buf_X)
        wb = np.concatenate(self._buf_w)
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
        self.set_state(stats, params, t)
        self._buf_X.clear()
        self._buf_w.clear()
        self.n_updates += 1

    def step(self, X: np.ndarray, sample_weight: np.ndarray | None = None,
             batch: tuple[SufficientStatistics, float] | None = None,
             extra: tuple[int, float] = (0, 0.0)) -> float:
        """One stepwise EM update from a batch; returns the batch's summed log-likelihood.

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
        """
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
            self.n_seen += n
            return ll
        a, b = self.schedule.coefficients(self.t, m, self.stats.total_weight)
        new = self.stats.scale(a)
        new += batch_stats.scale(b)
        params = new.to_params(self.reg_covar)
        reseeded = self._reseed_collapsed(new, params, X)
        if reseeded:
            params = new.to_params(self.reg_covar)
        if not (new.is_finite() and params.is_finite()):
            raise ValueError("the update produced non-finite parameters; the state was left unchanged")
        self.set_state(new, params, self.t + m)
        self.n_seen += n
        self.weight_seen += m
        self.n_updates += 1
        for k in reseeded:
            self.reseeds.append((self.n_seen, k))
        return ll

    def score_then_learn(self, X: np.ndarray, learn: Callable[[np.ndarray], np.ndarray] | None = None
                         ) -> tuple[np.ndarray, np.ndarray] | None:
        """Prequential step: score a batch under the current parameters, then learn it, one E-step.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features), finite
        learn : callable(log_p) -> bool ndarray of shape (n_samples,), optional
            Given the scores, which rows to learn (all when omitted); e.g. skip flagged anomalies.

        Returns
        -------
        (log_resp, log_p) computed before learning, of shapes (n_samples, K) and (n_samples,);
        ``None`` while warming up (the rows are buffered and learned at the end of the warm-up).
        """
        if not self.initialised:
            self.update(X)
            return None
        log_resp, log_p = self.scorer().log_resp(X)
        mask = np.ones(X.shape[0], dtype=bool) if learn is None else np.asarray(learn(log_p), dtype=bool)
        if mask.all():
            Xl, resp_l, ll = X, np.exp(log_resp), float(log_p.sum())
        else:
            Xl, resp_l, ll = X[mask], np.exp(log_resp[mask]), float(log_p[mask].sum())
        if Xl.shape[0]:
            stats = SufficientStatistics.from_resp(Xl, resp_l, covariance_type=self.covariance_type)
            self.step(Xl, batch=(stats, ll))
        return log_resp, log_p

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
        return state

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
        return arrays, meta

    def load_arrays(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Inverse of :meth:`to_arrays` (parameters are recomputed from the statistics)."""
        self.t = float(meta["t"])
        self.n_seen = int(meta["n_seen"])
        self.weight_seen = float(meta["weight_seen"])
        self.n_updates = int(meta["n_updates"])
        self.reseeds = [tuple(r) for r in meta["reseeds"]]
        rng_state_from_json(self.rng, meta["rng"])
        self._buf_X, self._buf_w = [], []
        if "buffer.X" in arrays:
            self._buf_X.append(np.array(arrays["buffer.X"], dtype=np.float64))
            self._buf_w.append(np.array(arrays["buffer.w"], dtype=np.float64))
        if "stats" in meta:
            stats = SufficientStatistics.from_arrays(arrays, meta["stats"], "stats.")
            self.set_state(stats, stats.to_params(self.reg_covar), self.t)
        else:
            self.stats = self.params = None
            self._scorer = None


def rng_state_to_json(rng: np.random.RandomState) -> list:
    """A ``RandomState``'s exact state as JSON-able data."""
    name, keys, pos, has_gauss, cached = rng.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def rng_state_from_json(rng: np.random.RandomState, state: list) -> None:
    """Restore a state written by :func:`rng_state_to_json`."""
    name, keys, pos, has_gauss, cached = state
    rng.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
