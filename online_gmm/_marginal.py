"""Marginal mixtures over a subset of features, and one-row evaluation on the shared kernels.

The marginal of a Gaussian mixture over observed features ``o`` is again a Gaussian mixture with the
same weights, means ``mu_k[o]`` and covariances ``Sigma_k[o, o]``: a record with missing features is
scored exactly by its marginal, never by imputing values. :func:`marginal_params` forms that mixture as
a :class:`~online_gmm._em.GaussianParams` (precision Cholesky factors from the kernel of its
covariance type), so it is evaluated by the same :class:`~online_gmm._em.Scorer` and kernels as the
full model. :class:`MarginalCache` keeps the marginals of recently seen observed-patterns.

:class:`RowScorer` evaluates one record with a parameter set's prepared kernel arrays
(:meth:`GaussianParams.prepared`) and one-row buffers: the same ``kernel.log_prob`` as
:class:`~online_gmm._em.Scorer`, without its cache-sized chunk buffers (a ``Scorer`` allocates
about 1 MiB, too much to keep one per observed-pattern).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from online_gmm._em import GaussianParams
from online_gmm._gaussian import get_kernel

__all__ = ["marginal_params", "RowScorer", "MarginalCache"]


def _covariances(params: GaussianParams) -> np.ndarray:
    """The covariances of ``params`` (from the precisions when they were given as precisions)."""
    if params.covariances is not None:
        return params.covariances
    prec = params.precisions()
    if params.covariance_type in ("full", "tied"):
        return np.linalg.inv(prec)
    return 1.0 / prec


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
    >>> from online_gmm._gaussian import get_kernel
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
    cov = np.ascontiguousarray(_SUB_BLOCK[ctype](_covariances(params), idx))
    kernel = get_kernel(ctype)
    return GaussianParams(ctype, params.weights.copy(), np.ascontiguousarray(params.means[:, idx]),
                          cov, kernel.precision_cholesky(cov))


class RowScorer:
    """One-row evaluation of a parameter set through its prepared kernel arrays.

    Parameters
    ----------
    params : GaussianParams

    Notes
    -----
    Results live in reused buffers: copy them to keep them.
    """

    __slots__ = ("params", "_kernel", "_prep", "_buf", "_out", "x")

    def __init__(self, params: GaussianParams) -> None:
        k_comp, d = params.means.shape
        self.params = params
        self._kernel = get_kernel(params.covariance_type)
        self._prep = params.prepared()
        self._buf = {"xc": np.empty((1, d)), "y": np.empty((1, k_comp * d)), "z": np.empty((1, d))}
        self._out = np.empty((1, k_comp))
        #: the input row buffer, shape (1, n_features): write the record here, then call
        #: :meth:`weighted_log_prob`
        self.x = np.empty((1, d))

    def weighted_log_prob(self, x: np.ndarray | None = None) -> np.ndarray:
        """log(w_k) + log N(x | k) of one record, shape (n_components,) (a reused buffer).

        Parameters
        ----------
        x : ndarray of shape (1, n_features), optional
            Defaults to the row buffer :attr:`x`.
        """
        out = self._out
        self._kernel.log_prob(self.x if x is None else x, self._prep, out, self._buf)
        out += self._prep["logw"]
        return out[0]

    @staticmethod
    def log_sum(wlp: np.ndarray) -> float:
        """log sum_k exp(wlp_k) of one row, shape (n_components,) -> float."""
        m = float(wlp.max())
        if not math.isfinite(m):
            return m
        return m + math.log(float(np.exp(wlp - m).sum()))


class MarginalCache:
    """Marginal mixtures of one parameter set, per observed-pattern, least recently used evicted.

    Parameters
    ----------
    params : GaussianParams
        The full mixture; the cache belongs to it (make a new cache when the parameters change).
    max_size : int, default=32
        Patterns kept (bounded memory: each entry holds a K x D x D marginal at most).
    """

    def __init__(self, params: GaussianParams, max_size: int = 32) -> None:
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
