"""Predictions and scores of the River learners, for one record (a dict) and for the rows of a
DataFrame: the evaluators of a parameter set (:class:`_View`), the provisional model of the warm-up,
and the mixin :class:`_Inference` of :class:`~online_gmm._river_base._DictGMM` (see
:mod:`online_gmm.river`).
"""

from __future__ import annotations

import math

import numpy as np

from online_gmm._em import _FAR, Scorer
from online_gmm._marginal import MarginalCache, RowScorer
from online_gmm._river_learning import _feature_scale
from online_gmm._suffstats import SufficientStatistics


def _overflowed(how: tuple) -> tuple[np.ndarray, float, np.ndarray]:
    """A record of ``_wlp_one`` (``how``: its evaluator and values) through the core's overflow-safe
    path: (weighted log-probabilities, log p, responsibilities). Called only when the one-row
    result is not finite (a Mahalanobis distance overflowed), so a clean record pays nothing."""
    evaluator, z = how[0], how[1]
    return evaluator.overflow_safe(z)


class _View:
    """The evaluators of one parameter set and the transform into its units (standardize); for
    the provisional model (``provisional``), the calibration of its scores (``cal``: observed
    pattern -> (offset, sorted sample NLLs); see :meth:`GMMAnomalyDetector._calibration`)."""

    __slots__ = ("cal", "log_det", "log_scale", "marginals", "provisional", "row", "scale", "shift")

    def __init__(self, row: RowScorer, marginals: MarginalCache, shift: np.ndarray | None,
                 scale: np.ndarray | None, log_scale: np.ndarray | None,
                 provisional: bool = False) -> None:
        self.cal: dict[bytes, tuple[float, list[float]]] = {}
        self.provisional = provisional
        self.row = row
        self.marginals = marginals
        self.shift = shift
        self.scale = scale
        self.log_scale = log_scale
        self.log_det = 0.0 if log_scale is None else float(log_scale.sum())


class _Inference:
    """``predict_one``, ``predict_proba_one``, ``nll_one``, ``score_one`` and their ``*_many``
    forms of the River learners (see :mod:`online_gmm.river`)."""

    # ------------------------------------------------------------------ inference, one record
    def _wlp_one(self, x: dict, view: _View) -> tuple[np.ndarray | None, float, tuple]:
        """log w_k + log N(z_o | k) over the observed features ``o``, shape (K,) (None if no feature
        is observed), ``sum_o log scale_o`` (0.0 without standardisation), and (evaluator, ``z_o``,
        observed mask or None when every feature is observed) for :func:`_overflowed` and the
        calibration; ``z`` is the record in the model's units."""
        try:
            vals = [x[k] for k in self._keys]
            s = sum(vals)
            ok = s - s == 0.0
        except (KeyError, TypeError):
            ok = False
        scale = view.scale
        if ok:
            if scale is None:
                return view.row.weighted_log_prob(vals), 0.0, (view.row, vals, None)
            z = np.subtract(vals, view.shift)
            z /= scale
            return view.row.weighted_log_prob(z), view.log_det, (view.row, z, None)
        row = self._values(x)
        observed = ~np.isnan(row)
        if not observed.any():
            return None, 0.0, ()
        jac = 0.0
        if scale is not None:
            row -= view.shift
            row /= scale
            jac = float(view.log_scale[observed].sum())
        if observed.all():
            return view.row.weighted_log_prob(row), jac, (view.row, row, None)
        evaluator = view.marginals.get(observed)
        return evaluator.weighted_log_prob(row[observed]), jac, (evaluator, row[observed], observed)

    def _log_likelihood_parts(self, x: dict) -> tuple[float, float, _View | None, np.ndarray | None]:
        """(log p_z(z_o) in the model's units, ``sum_o log scale_o``, the view, the observed mask or
        None when complete); the view is None (and log p 0.0) without a model or observed feature."""
        view = self._fitted
        if view is None:
            view = self._provisional()
            if view is None:
                return 0.0, 0.0, None, None
        wlp, jac, how = self._wlp_one(x, view)
        if wlp is None:
            return 0.0, 0.0, None, None
        ll = RowScorer.log_sum(wlp)
        if not math.isfinite(ll):                    # overflow (or -inf): never NaN, never plausible
            ll = _overflowed(how)[1]
        return ll, jac, view, how[2]

    def _log_likelihood_one(self, x: dict) -> float:
        ll, jac, _, _ = self._log_likelihood_parts(x)
        return ll - jac

    #: score records during the warm-up with a provisional diagonal Gaussian (anomaly detector only)
    _provisional_scores = False

    def _provisional(self) -> _View | None:
        """Before the warm-up fit: one diagonal Gaussian of the complete records learned so far.

        Its statistics are folded in exactly (Chan merge of :class:`SufficientStatistics`, the core's
        M-step ``to_params(reg_covar)``) from the rows waiting for the warm-up fit, incrementally:
        each row is folded once. With ``standardize``, the Gaussian is that of the rows standardised
        by their current mean and scale (so ``reg_covar`` is relative, as after the fit). None when
        disabled or with fewer than two records learned.
        """
        if not self._provisional_scores or self._online is None or self._online.initialised:
            return None
        parts = self._warm + ([self._buf[: self._n_buf]] if self._n_buf else [])
        total = sum(len(b) for b in parts)
        if total < 2:
            return None
        pre = getattr(self, "_pre", None)
        if pre is None or pre[0] > total:
            pre = (0, None, None)
        done, stats, view = pre
        if done < total:
            tail, pos = [], 0
            for b in parts:
                if pos + len(b) > done:
                    tail.append(b[max(0, done - pos):])
                pos += len(b)
            Xt = np.concatenate(tail)
            new = SufficientStatistics.from_resp(Xt, np.ones((Xt.shape[0], 1)), covariance_type="diag")
            stats = new if stats is None else stats + new
            shift = scale = log_scale = None
            model = stats
            if self.standardize:
                shift, scale = _feature_scale(stats)
                log_scale = np.log(scale)
                model = SufficientStatistics("diag", stats.weights, (stats.means - shift) / scale,
                                             stats.scatter / scale ** 2)
            params = model.to_params(float(self.reg_covar))
            view = _View(RowScorer(params), MarginalCache(params), shift, scale, log_scale,
                         provisional=True)
            self._pre = (total, stats, view)
        return view

    def predict_proba_one(self, x: dict) -> dict[int, float]:
        """Posterior probability of each component given the observed features of ``x``.

        Returns
        -------
        dict of int to float
            ``n_components`` entries summing to one; uniform before the warm-up is over.
        """
        k_comp = self.n_components
        view = self._fitted
        if view is None:
            return {k: 1.0 / k_comp for k in range(k_comp)}
        wlp, _, how = self._wlp_one(x, view)
        if wlp is None:
            p = self._online.params.weights
        else:
            ll = RowScorer.log_sum(wlp)
            if math.isfinite(ll):
                p = np.exp(wlp - ll)
                if ll < -_FAR:               # log p absorbed the log of the sum: normalise
                    p /= p.sum()
            else:
                p = _overflowed(how)[2]
        return {k: float(v) for k, v in enumerate(p)}

    def predict_one(self, x: dict) -> int:
        """The most probable component of ``x`` (0 before the warm-up is over)."""
        view = self._fitted
        if view is None:
            return 0
        wlp, _, how = self._wlp_one(x, view)
        if wlp is None:
            return int(self._online.params.weights.argmax())
        k = int(wlp.argmax())
        return k if math.isfinite(wlp[k]) else int(_overflowed(how)[2].argmax())

    def nll_one(self, x: dict) -> float:
        """Negative log-likelihood -log p(x) of the observed features of ``x`` (in nats).

        0.0 for a record with no observed feature, and before the warm-up is over (except for
        :class:`GMMAnomalyDetector`, which scores with a provisional diagonal Gaussian then). With
        ``standardize``, the density is that of ``x`` in its own units (see :mod:`online_gmm.river`).
        """
        return -self._log_likelihood_one(x)

    def score_one(self, x: dict) -> float:
        """Negative log-likelihood of the observed features of ``x``: higher is more anomalous
        (:meth:`nll_one`; :class:`GMMAnomalyDetector` calibrates it to [0, 1])."""
        return -self._log_likelihood_one(x)

    # ------------------------------------------------------------------ inference, many records
    def _wlp_many(self, X) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple | None]:
        """For the rows of a DataFrame: log w_k + log N(z_o | k), shape (n, K); log p(z_o), shape (n,)
        (0.0 where nothing is observed); and ``sum_o log scale_o``, shape (n,) (zeros without
        standardisation), so that log p(x_o) = log p(z_o) - that sum."""
        params = self._online.params
        A = self._frame(X)
        obs = ~np.isnan(A)
        if self._scale is not None:
            A -= self._shift
            A /= self._scale
        n = A.shape[0]
        wlp = np.empty((n, self.n_components))
        complete = obs.all(axis=1)
        if complete.any():
            wlp[complete] = self._online.scorer().weighted_log_prob(np.ascontiguousarray(A[complete]))
        rest = np.flatnonzero(~complete)
        if rest.size:
            patterns, inverse = np.unique(obs[rest], axis=0, return_inverse=True)
            for j, pat in enumerate(patterns):
                rows = rest[inverse.reshape(-1) == j]
                if not pat.any():
                    wlp[rows] = np.log(params.weights)
                    continue
                sub = self._marginals.get(pat).params
                wlp[rows] = Scorer(sub).weighted_log_prob(np.ascontiguousarray(A[np.ix_(rows, np.flatnonzero(pat))]))
        m = wlp.max(axis=1)
        with np.errstate(invalid="ignore"):
            log_p = m + np.log(np.exp(wlp - m[:, None]).sum(axis=1))
        lost = np.flatnonzero(~np.isfinite(m) & obs.any(axis=1))
        if lost.size:          # zero density under every component (overflow): log p = -inf, and
            log_p[lost] = -np.inf   # the responsibilities of the core's rule (see predict_proba_many)
            lost_resp = (lost, np.stack([
                (self._row if obs[i].all() else self._marginals.get(obs[i])).overflow_safe(
                    A[i, obs[i]])[2] for i in lost.tolist()]))
        else:
            lost_resp = None
        none = ~obs.any(axis=1)
        log_p[none] = 0.0
        jac = np.zeros(n) if self._scale is None else obs @ self._log_scale
        return wlp, log_p, jac, lost_resp

    def predict_many(self, X):
        """Most probable component of each row of a DataFrame, as a pandas Series of int."""
        import pandas as pd
        if self._row is None:
            return pd.Series(np.zeros(len(X), dtype=int), index=X.index)
        wlp, _, _, lost = self._wlp_many(X)
        labels = wlp.argmax(axis=1)
        if lost is not None:
            rows, resp = lost
            labels[rows] = resp.argmax(axis=1)
        return pd.Series(labels, index=X.index)

    def predict_proba_many(self, X):
        """Posterior probabilities, a DataFrame of shape (n_samples, n_components)."""
        import pandas as pd
        k_comp = self.n_components
        if self._row is None:
            return pd.DataFrame(np.full((len(X), k_comp), 1.0 / k_comp), index=X.index)
        wlp, log_p, _, lost = self._wlp_many(X)
        none = np.isnan(self._frame(X)).all(axis=1)
        with np.errstate(invalid="ignore"):
            p = np.exp(wlp - log_p[:, None])
        far = log_p < -_FAR                   # log p absorbed the log of the sum: normalise
        if far.any():
            p[far] /= p[far].sum(axis=1, keepdims=True)
        if lost is not None:
            rows, resp = lost
            p[rows] = resp
        p[none] = self._online.params.weights
        return pd.DataFrame(p, index=X.index)

    def nll_many(self, X):
        """Negative log-likelihood of each row of a DataFrame (a pandas Series of float)."""
        import pandas as pd
        if self._row is None:
            if self._provisional() is None:
                return pd.Series(np.zeros(len(X)), index=X.index)
            return pd.Series([self.nll_one(x) for x in X.to_dict(orient="records")], index=X.index)
        _, log_p, jac, _ = self._wlp_many(X)
        return pd.Series(jac - log_p, index=X.index)

    def score_many(self, X):
        """:meth:`score_one` of each row of a DataFrame (a pandas Series of float)."""
        return self.nll_many(X)
