"""Calibration of :class:`~online_gmm.river.GMMAnomalyDetector`'s scores: the mixture sampled from
fixed draws (:func:`_mixture_sample`) and the empirical CDF of the sample's negative
log-likelihoods with its two tails (:func:`_cdf_one`, :func:`_cdf_many`).
"""

from __future__ import annotations

import bisect
import math

import numpy as np
from scipy.linalg import solve_triangular

from online_gmm._em import GaussianParams

# ---------------------------------------------------------------------------------- score calibration
# GMMAnomalyDetector.score_one is F(s), s = -log p(x): the probability under the current mixture that
# a random record is at least as likely as x, P(log p(Y) >= log p(x)) = P(S <= s) with S = -log p(Y),
# estimated from _N_CALIBRATION fixed draws pushed through the current parameters (see the class
# docstring for the interpolation and the two tails).

#: records sampled from the model to calibrate its scores (resolution 1/(M+1) in the body)
_N_CALIBRATION = 1000
#: observed patterns whose calibration a parameter set keeps (as MarginalCache)
_N_PATTERNS = 8
#: the calibration sample is redrawn at an update when at least this many records were learned
#: since the last redraw (every second update with the default update_every=128)
_CAL_EVERY = 256


def _cholesky_full(U: np.ndarray, comp: int, E: np.ndarray) -> np.ndarray:
    return solve_triangular(U[comp], E.T, trans="T", lower=False, check_finite=False).T


def _cholesky_tied(U: np.ndarray, comp: int, E: np.ndarray) -> np.ndarray:
    return solve_triangular(U, E.T, trans="T", lower=False, check_finite=False).T


def _cholesky_diag(U: np.ndarray, comp: int, E: np.ndarray) -> np.ndarray:
    return E / U[comp]


#: per covariance type: standard normal rows E -> rows with covariance (U U^T)^-1, where U is the
#: precision Cholesky factor of component ``comp`` (a triangular solve, no inverse)
_COLOUR = {"full": _cholesky_full, "tied": _cholesky_tied, "diag": _cholesky_diag,
           "spherical": _cholesky_diag}


def _mixture_sample(params: GaussianParams, u0: float, E: np.ndarray) -> np.ndarray:
    """A sample of the mixture, shape (M, D), from fixed draws: component counts by systematic
    sampling (positions ``(i + u0) / M`` against the cumulative weights: each component gets
    ``M w_k`` rows, give or take one) and the standard normal rows ``E`` coloured by the
    component's covariance. The same draws and parameters give the same sample."""
    m = E.shape[0]
    cum = np.cumsum(params.weights)
    # positions increase, so each component's rows are one contiguous block
    ends = np.searchsorted((np.arange(m) + u0) / m, cum / cum[-1], side="left")
    ends[-1] = m
    X = np.empty_like(E)
    colour = _COLOUR[params.covariance_type]
    start = 0
    for k, end in enumerate(ends.tolist()):
        if end > start:
            X[start:end] = params.means[k] + colour(params.precisions_cholesky, k, E[start:end])
            start = end
    return X


def _cdf_one(q: list[float], s: float) -> float:
    """The calibrated score of the NLL ``s`` against the sorted sample NLLs ``q`` (see
    :class:`GMMAnomalyDetector`): strictly increasing in ``s``, in (0, 1), 1.0 only for
    excesses beyond about 1e13 nats (and for ``s = inf``)."""
    step = 1.0 / (len(q) + 1)
    if s <= q[0]:
        return step * math.exp(s - q[0])
    if s >= q[-1]:
        return 1.0 - step / (1.0 + (s - q[-1]))
    i = bisect.bisect_right(q, s)              # q[i-1] <= s < q[i]
    lo, hi = q[i - 1], q[i]
    return step * (i + (s - lo) / (hi - lo))


def _cdf_many(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """:func:`_cdf_one` of each NLL in ``s`` (equal to rounding)."""
    m = q.shape[0]
    step = 1.0 / (m + 1)
    out = np.interp(s, q, step * np.arange(1, m + 1))
    low, high = s <= q[0], s >= q[-1]
    out[low] = step * np.exp(s[low] - q[0])
    with np.errstate(invalid="ignore"):
        out[high] = 1.0 - step / (1.0 + (s[high] - q[-1]))
    return out
