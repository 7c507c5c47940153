"""Marginal mixtures over a subset of features, and one-row evaluation on the shared kernels.

The marginal of a Gaussian mixture over observed features ``o`` is again a Gaussian mixture with the
same weights, means ``mu_k[o]`` and covariances ``Sigma_k[o, o]``: a record with missing features is
scored exactly by its marginal, never by imputing values. :func:`marginal_params` forms that mixture as
a :class:`~online_gmm._em.GaussianParams` (precision Cholesky factors from the kernel of its
covariance type), so it is evaluated by the same :class:`~online_gmm._em.Scorer` and kernels as the
full model. :class:`MarginalCache` keeps the marginals of recently seen observed-patterns.

:class:`RowScorer` evaluates one record through :meth:`Scorer.weighted_log_prob_chunk
<online_gmm._em.Scorer.weighted_log_prob_chunk>` with a reused one-row input buffer.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from online_gmm._em import GaussianParams, Scorer
from online_gmm._gaussian import ROW_LAYOUT, get_kernel

__all__ = ["marginal_params", "RowScorer", "MarginalCache"]


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
