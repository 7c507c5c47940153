"""Marginal mixtures over a subset of features, and one-row evaluation on the shared kernels.

The marginal of a Gaussian mixture over observed features ``o`` is again a Gaussian mixture with the
same weights, means ``mu_k[o]`` and covariances ``Sigma_k[o, o]``: a record with missing features is
scored exactly by its marginal, never by imputing values. :func:`marginal_params` forms that mixture as
a :class:`~online_gmm._em.GaussianParams` (precision Cholesky factors from the kernel of its
covariance type), so it is evaluated by the same :class:`~online_gmm._em.Scorer` and kernels as the
full model. :class:`MarginalCache` keeps the marginals of recently seen observed-patterns.

:func:`incomplete_statistics` is the exact E-step for records with missing features (missing at
random): responsibilities from the marginal over the observed features, the missing block replaced
by its conditional mean under each component and the conditional covariance added to the scatter
(Ghahramani & Jordan, 1994), so EM and stepwise EM learn from incomplete records.

:class:`RowScorer` evaluates one record through :meth:`Scorer.weighted_log_prob_chunk
<online_gmm._em.Scorer.weighted_log_prob_chunk>` with a reused one-row input buffer.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from online_gmm._em import GaussianParams, Scorer
from online_gmm._gaussian import ROW_LAYOUT, get_kernel
from online_gmm._suffstats import SufficientStatistics

__all__ = ["marginal_params", "RowScorer", "MarginalCache", "incomplete_statistics"]


def _sub_full(cov: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return cov[:, idx[:, None], idx[None, :]]


def _sub_tied(cov: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return cov[idx[:, None], idx[None, :]]


def _sub_diag(cov: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return cov[:, idx]


def _sub_spherical(cov: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return cov.copy()  # the same variance in every remaining direction


#: sub-block of the covariances for the observed features, per covariance type
_SUB_BLOCK = {"full": _sub_full, "tied": _sub_tied, "diag": _sub_diag, "spherical": _sub_spherical}


def marginal_params(params: GaussianParams, observed_idx) -> GaussianParams:
    """The mixture's marginal distribution over the features ``observed_idx``.

    Exact for a Gaussian mixture: the weights are unchanged, each component keeps the sub-vector of
    its mean and the sub-block of its covariance. The precision Cholesky factors are computed from
    the sub-block covariances by the covariance type's kernel.

    Parameters
    ----------
    params : GaussianParams
        A mixture with ``n_features`` features.
    observed_idx : array-like of int of shape (n_observed,)
        Indices of the observed features, each in ``[0, n_features)``, without repeats; at least one.

    Returns
    -------
    GaussianParams
        With ``n_features == n_observed``; the covariance type is unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.stats import multivariate_normal
    >>> from online_gmm._em import GaussianParams, Scorer
    >>> from online_gmm._gaussian import ROW_LAYOUT, get_kernel
    >>> cov = np.array([[[2.0, 0.5, 0.1], [0.5, 1.0, 0.2], [0.1, 0.2, 3.0]]])
    >>> params = GaussianParams("full", np.ones(1), np.array([[1.0, 2.0, 3.0]]), cov,
    ...                         get_kernel("full").precision_cholesky(cov))
    >>> marg = marginal_params(params, [0, 2])
    >>> marg.means
    array([[1., 3.]])
    >>> x = np.array([[0.5, 4.0]])
    >>> ref = multivariate_normal([1.0, 3.0], [[2.0, 0.1], [0.1, 3.0]]).logpdf(x[0])
    >>> bool(np.isclose(Scorer(marg).score_samples(x)[0], ref))
    True
    """
    idx = np.asarray(observed_idx, dtype=np.intp).reshape(-1)
    d = params.n_features
    if idx.size == 0:
        raise ValueError("observed_idx must name at least one feature, got an empty index")
    if idx.min() < 0 or idx.max() >= d or np.unique(idx).size != idx.size:
        raise ValueError(
            f"observed_idx must hold distinct feature indices in [0, {d}), got {idx.tolist()!r}")
    ctype = params.covariance_type
    cov = np.ascontiguousarray(_SUB_BLOCK[ctype](params.covariance_matrices(), idx))
    kernel = get_kernel(ctype)
    return GaussianParams(ctype, params.weights.copy(), np.ascontiguousarray(params.means[:, idx]),
                          cov, kernel.precision_cholesky(cov))


class RowScorer:
    """One-row evaluation of a parameter set on the kernels' prepared arrays.

    ``weighted_log_prob`` equals :meth:`Scorer.weighted_log_prob <online_gmm._em.Scorer>` to
    rounding. A one-row fast path reads the prepared arrays of :meth:`GaussianParams.prepared`
    directly; if their layout is not the one it knows, the core ``Scorer`` evaluates the row.

    Parameters
    ----------
    params : GaussianParams
    """

    __slots__ = ("params", "_prep", "_row", "_ws", "_scorer", "_x")

    def __init__(self, params: GaussianParams) -> None:
        k_comp, d = params.means.shape
        self.params = params
        prep = self._prep = params.prepared()
        row, keys, col, y_len = ROW_LAYOUT[params.covariance_type]
        self._row = row if all(k in prep for k in keys) else None
        self._scorer = None
        self._x = None
        if self._row is None:
            self._scorer = Scorer(params)
            self._x = np.empty((1, d))
            return
        ws = {"xc": np.empty(d), "y": np.empty(y_len(k_comp, d)), "q": np.empty(k_comp),
              "const": prep["const"] + prep["logw"], "b": None, "bb": None}
        if params.covariance_type == "full":
            ws["b"] = prep[col].reshape(-1)
            ws["half_sum"] = np.kron(np.eye(k_comp), np.full((d, 1), -0.5))
        else:
            ws["bb"] = prep[col].reshape(-1)
        self._ws = ws

    def weighted_log_prob(self, x) -> np.ndarray:
        """log(w_k) + log N(x | k) of one record, shape (n_components,), in a reused buffer.

        Parameters
        ----------
        x : sequence of float or ndarray of shape (n_features,)
        """
        if self._row is None:
            xr = self._x
            xr[0] = x
            return self._scorer.weighted_log_prob_chunk(xr)[0]
        ws = self._ws
        xc = np.subtract(x, self._prep["c"], out=ws["xc"])
        return self._row(xc, self._prep, ws)

    def overflow_safe(self, x) -> tuple[np.ndarray, float, np.ndarray]:
        """One record through :class:`~online_gmm._em.Scorer`'s overflow-safe path, for a record
        whose one-row result was not finite: (log w_k + log N(x | k) of shape (K,), never NaN;
        log p(x), -inf when it underflows under every component; responsibilities of shape (K,),
        by the Scorer's rule for such records: the nearest component in Mahalanobis distance).

        Parameters
        ----------
        x : sequence of float or ndarray of shape (n_features,)
        """
        X = np.asarray(x, dtype=np.float64).reshape(1, -1)
        scorer = Scorer(self.params)
        with np.errstate(over="ignore", invalid="ignore"):
            wlp = scorer.weighted_log_prob(X)[0]
            log_resp, log_p = scorer.log_resp(X)
        return wlp, float(log_p[0]), np.exp(log_resp[0])

    @staticmethod
    def log_sum(wlp: np.ndarray) -> float:
        """log sum_k exp(wlp_k) of one row, shape (n_components,) -> float."""
        w = wlp.tolist()
        m = max(w)
        if not math.isfinite(m):
            return m
        exp = math.exp
        return m + math.log(sum([exp(v - m) for v in w]))


class MarginalCache:
    """Marginal mixtures of one parameter set, per observed-pattern, least recently used evicted.

    Parameters
    ----------
    params : GaussianParams
        The full mixture; the cache belongs to it (make a new cache when the parameters change).
    max_size : int, default=8
        Patterns kept (bounded memory: each entry holds a K x D x D marginal at most).
    """

    def __init__(self, params: GaussianParams, max_size: int = 8) -> None:
        self.params = params
        self.max_size = int(max_size)
        self._entries: OrderedDict[bytes, RowScorer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, observed: np.ndarray) -> RowScorer:
        """The :class:`RowScorer` of the marginal over ``observed``, a boolean mask of shape (D,)
        with at least one True."""
        key = observed.tobytes()
        entry = self._entries.get(key)
        if entry is None:
            entry = RowScorer(marginal_params(self.params, np.flatnonzero(observed)))
            self._entries[key] = entry
            if len(self._entries) > self.max_size:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return entry

    def peek(self, observed: np.ndarray) -> GaussianParams | None:
        """The marginal over ``observed`` if it is cached (None otherwise); the cache is unchanged."""
        entry = self._entries.get(observed.tobytes())
        return None if entry is None else entry.params


# --------------------------------------------------------------------------------------------------
# The E-step for incomplete records: conditional expectations of the missing block
# --------------------------------------------------------------------------------------------------
# Per covariance type: the regression of the missing block ``m`` on the observed block ``o`` and the
# conditional covariance, from the model's covariances and the precision Cholesky factor U of the
# marginal (S_oo^-1 = U U^T, computed by marginal_params): with A = S_mo U,
#     E[x_m | x_o, k] = mu_m + (A U^T) (x_o - mu_o),    Cov[x_m | x_o, k] = S_mm - A A^T.
# Each returns (B, C): B of shape (K, |m|, |o|) (tied: (|m|, |o|), shared; None when the blocks are
# independent, i.e. the conditional mean is mu_m), and C, the conditional covariance embedded in the
# scatter layout of the type (zero on the observed block), per unit of responsibility.
def _cond_full(cov: np.ndarray, marg: GaussianParams, obs: np.ndarray, mis: np.ndarray):
    u = marg.precisions_cholesky
    a = cov[:, mis[:, None], obs[None, :]] @ u
    c_mm = cov[:, mis[:, None], mis[None, :]] - a @ np.swapaxes(a, 1, 2)
    c = np.zeros_like(cov)
    c[:, mis[:, None], mis[None, :]] = 0.5 * (c_mm + np.swapaxes(c_mm, 1, 2))
    return a @ np.swapaxes(u, 1, 2), c


def _cond_tied(cov: np.ndarray, marg: GaussianParams, obs: np.ndarray, mis: np.ndarray):
    u = marg.precisions_cholesky
    a = cov[mis[:, None], obs[None, :]] @ u
    c_mm = cov[mis[:, None], mis[None, :]] - a @ a.T
    c = np.zeros_like(cov)
    c[mis[:, None], mis[None, :]] = 0.5 * (c_mm + c_mm.T)
    return a @ u.T, c


def _cond_diag(cov: np.ndarray, marg: GaussianParams, obs: np.ndarray, mis: np.ndarray):
    c = np.zeros_like(cov)
    c[:, mis] = cov[:, mis]              # the component variances of the missing features
    return None, c


def _cond_spherical(cov: np.ndarray, marg: GaussianParams, obs: np.ndarray, mis: np.ndarray):
    return None, cov * mis.size          # the trace of variance * I over the missing block


_CONDITIONAL = {"full": _cond_full, "tied": _cond_tied, "diag": _cond_diag,
                "spherical": _cond_spherical}

#: sum_k nk_k C_k in the scatter layout of the type (tied: one pooled C for every component)
_WEIGHTED_TERM = {
    "full": lambda nk, c: nk[:, None, None] * c,
    "tied": lambda nk, c: nk.sum() * c,
    "diag": lambda nk, c: nk[:, None] * c,
    "spherical": lambda nk, c: nk * c,
}

#: floats of the stacked completed rows (K copies of each row) per from_resp call
_STACK_FLOATS = 1 << 18


def _conditional_means(means: np.ndarray, b: np.ndarray | None, xo: np.ndarray, obs: np.ndarray,
                       mis: np.ndarray) -> np.ndarray:
    """E[x_m | x_o, k] for the rows ``xo`` of one pattern, shape (K, n_rows, n_missing)."""
    mu_m = means[:, None, mis]
    if b is None:
        return np.broadcast_to(mu_m, (means.shape[0], xo.shape[0], mis.size))
    dev = xo[None, :, :] - means[:, None, obs]
    return mu_m + dev @ np.swapaxes(b, -1, -2)


def _conditional_statistics(X: np.ndarray, rows: np.ndarray, missing: np.ndarray,
                            params: GaussianParams, sample_weight: np.ndarray | None,
                            marginals: MarginalCache | None
                            ) -> tuple[SufficientStatistics, float]:
    """Expected complete-data statistics of ``X[rows]`` (each with at least one observed feature),
    through the conditional distribution of its missing block (empty for a complete row).

    Rows are grouped by missing-pattern; per pattern the marginal's responsibilities and the
    regression of the missing block are computed once. The completed rows of every component are
    stacked, ``K`` copies of each row with block-diagonal responsibilities, and reduced by ONE
    :meth:`SufficientStatistics.from_resp` call per chunk; the conditional covariances are then
    added to the scatter.
    """
    k_comp, d = params.means.shape
    ctype = params.covariance_type
    cov = params.covariance_matrices()
    cond = _CONDITIONAL[ctype]
    weighted_term = _WEIGHTED_TERM[ctype]
    patterns, inverse = np.unique(missing[rows], axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    rows, inverse = rows[order], inverse[order]
    n = rows.size
    step = max(1, _STACK_FLOATS // (k_comp * max(d, k_comp)))
    per_pattern: dict[int, tuple] = {}
    diag_k = np.arange(k_comp)
    stats = None
    total = 0.0
    for a in range(0, n, step):
        b = min(n, a + step)
        m = b - a
        idx_all = rows[a:b]
        fill = np.empty((k_comp, m, d))
        fill[:] = X[idx_all]
        resp = np.zeros((k_comp, m, k_comp))
        term = np.zeros(get_kernel(ctype).scatter_shape(k_comp, d))
        cuts = (np.flatnonzero(np.diff(inverse[a:b])) + 1).tolist()
        for lo, hi in zip([0] + cuts, cuts + [m]):
            j = int(inverse[a + lo])
            entry = per_pattern.get(j)
            if entry is None:
                pat = patterns[j]
                obs, mis = np.flatnonzero(~pat), np.flatnonzero(pat)
                marg = None if marginals is None else marginals.peek(~pat)
                if marg is None:
                    marg = marginal_params(params, obs)
                entry = per_pattern[j] = (obs, mis, Scorer(marg)) + cond(cov, marg, obs, mis)
            obs, mis, scorer, reg, c = entry
            idx = idx_all[lo:hi]
            xo = np.ascontiguousarray(X[np.ix_(idx, obs)])
            log_resp, log_p = scorer.log_resp(xo)
            r = np.exp(log_resp)
            w = None if sample_weight is None else sample_weight[idx]
            total += float(log_p.sum() if w is None else log_p @ w)
            term += weighted_term((r if w is None else r * w[:, None]).sum(axis=0), c)
            fill[:, lo:hi, mis] = _conditional_means(params.means, reg, xo, obs, mis)
            resp[diag_k, lo:hi, diag_k] = r.T
        w_all = None if sample_weight is None else np.tile(sample_weight[idx_all], k_comp)
        chunk = SufficientStatistics.from_resp(fill.reshape(k_comp * m, d),
                                               resp.reshape(k_comp * m, k_comp), w_all,
                                               covariance_type=ctype)
        chunk.scatter += term
        stats = SufficientStatistics.accumulate(stats, chunk)
    return (stats if stats is not None else SufficientStatistics.zeros(k_comp, d, ctype)), total


def incomplete_statistics(X, params: GaussianParams, sample_weight=None, *,
                          marginals: MarginalCache | None = None
                          ) -> tuple[SufficientStatistics, float]:
    """The exact E-step for rows with missing (NaN) entries, missing at random.

    For a row with observed features ``o`` and missing features ``m``, and component ``k``
    (Ghahramani & Jordan, 1994):

    * the responsibility ``r_k`` is the posterior of ``k`` under the marginal over ``o``
      (:func:`marginal_params`, evaluated by the core :class:`~online_gmm._em.Scorer`);
    * the missing block is replaced by its conditional mean
      ``mu_m + S_mo S_oo^-1 (x_o - mu_o)`` (triangular products with the marginal's precision
      Cholesky factor, no inverse); for 'diag' and 'spherical' that is ``mu_m``;
    * the conditional covariance ``C_k = S_mm - S_mo S_oo^-1 S_om`` (zero on the observed block)
      is added to the scatter: the expected scatter of component ``k`` is the centred scatter of
      the completed rows plus ``sum_i r_ik w_i C_k``, in the layout of the covariance type ('diag':
      the variances of the missing features; 'spherical': their sum; 'tied': one ``C`` shared by
      the components, the per-component conditional means differing, the scatter pooled).

    The M-step of these statistics (:meth:`SufficientStatistics.to_params`) is then an EM step for
    the observed-data likelihood. Complete rows get exactly :meth:`Scorer.expected_statistics
    <online_gmm._em.Scorer.expected_statistics>`; a row with no observed feature contributes
    nothing (weight, statistics and log-likelihood 0): count such rows with
    ``np.isnan(X).all(axis=1)`` if needed.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        NaN marks a missing entry; every other entry must be finite.
    params : GaussianParams
        The mixture the expectations are taken under (any covariance type).
    sample_weight : array-like of shape (n_samples,), optional
    marginals : MarginalCache, optional
        A cache of marginals of ``params``: the marginals it holds are reused (it is not filled).

    Returns
    -------
    stats : SufficientStatistics
        Expected complete-data statistics of the rows, covariance type of ``params``.
    log_likelihood : float
        ``sum_i w_i log p(x_o,i)``, the observed-data log-likelihood of the rows.

    Examples
    --------
    One Gaussian, the second feature missing: the conditional mean fills it in, and the
    conditional variance ``2 - 1 * 1 / 1 = 1`` stays in the scatter.

    >>> import numpy as np
    >>> from online_gmm._em import GaussianParams
    >>> from online_gmm._gaussian import get_kernel
    >>> cov = np.array([[[1.0, 1.0], [1.0, 2.0]]])
    >>> params = GaussianParams("full", np.ones(1), np.zeros((1, 2)), cov,
    ...                         get_kernel("full").precision_cholesky(cov))
    >>> stats, ll = incomplete_statistics(np.array([[3.0, np.nan]]), params)
    >>> stats.means, stats.scatter
    (array([[3., 3.]]), array([[[0., 0.],
            [0., 1.]]]))
    """
    X = np.asarray(X, dtype=np.float64)
    k_comp, d = params.means.shape
    if X.ndim != 2 or X.shape[1] != d:
        raise ValueError(f"X must have shape (n_samples, {d}), got {X.shape!r}")
    w = None
    if sample_weight is not None:
        w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
        if w.shape != (X.shape[0],):
            raise ValueError(f"sample_weight must have shape ({X.shape[0]},), got {w.shape!r}")
    missing = np.isnan(X)
    incomplete = missing.any(axis=1)
    ctype = params.covariance_type
    stats = None
    total = 0.0
    complete = np.flatnonzero(~incomplete)
    if complete.size:
        stats, total = Scorer(params).expected_statistics(
            np.ascontiguousarray(X[complete]), None if w is None else w[complete])
    rest = np.flatnonzero(incomplete & ~missing.all(axis=1))
    if rest.size:
        inc, ll = _conditional_statistics(X, rest, missing, params, w, marginals)
        total += ll
        stats = SufficientStatistics.accumulate(stats, inc)
    return (stats if stats is not None else SufficientStatistics.zeros(k_comp, d, ctype)), total
