"""Covariances from scatter (the M-step) and the conversions between covariances, precisions and
precision Cholesky factors, in scikit-learn's conventions (``precision = U @ U.T``, ``U`` upper
triangular), with the log-determinant of ``U``: one function per covariance type.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

__all__ = ["CHOLESKY_ERROR"]

CHOLESKY_ERROR = (
    "Fitting the mixture model failed because some components have ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Try to decrease the "
    "number of components, increase reg_covar, or scale the input data."
)


# --------------------------------------------------------------------------------------------------
# M-step: covariances from scatter
# --------------------------------------------------------------------------------------------------
def _safe_nk(nk):
    return nk + 10 * np.finfo(float).eps


def _cov_full(scatter, nk, reg_covar):
    cov = scatter / _safe_nk(nk)[:, None, None]
    d = cov.shape[-1]
    cov.reshape(len(nk), -1)[:, :: d + 1] += reg_covar
    return cov


def _cov_tied(scatter, nk, reg_covar):
    cov = scatter / _safe_nk(nk).sum()
    cov.flat[:: cov.shape[0] + 1] += reg_covar
    return cov


def _cov_diag(scatter, nk, reg_covar):
    return scatter / _safe_nk(nk)[:, None] + reg_covar


# --------------------------------------------------------------------------------------------------
# precision Cholesky factors
# --------------------------------------------------------------------------------------------------
def _prec_chol_unchecked(cov: np.ndarray) -> np.ndarray:
    # LAPACK potrf + trtri: the same factor as cholesky + solve_triangular(L, I), without the
    # wrappers' checks (a few microseconds instead of ~50 per matrix: partial_fit does K per batch).
    # The caller checks finiteness (potrf does not fail on NaN).
    potrf, trtri = _lapack()
    l, info = potrf(cov, lower=1, clean=1)
    if info != 0:
        raise ValueError(CHOLESKY_ERROR)
    inv, info = trtri(l, lower=1)
    if info != 0:
        raise ValueError(CHOLESKY_ERROR)
    return inv.T


@functools.cache
def _lapack() -> tuple[Callable, Callable]:
    """LAPACK's dpotrf and dtrtri, imported on first use (a job's start-up does not pay for scipy)."""
    from scipy.linalg import lapack

    return lapack.dpotrf, lapack.dtrtri


def _prec_chol_matrix(cov: np.ndarray) -> np.ndarray:
    out = _prec_chol_unchecked(cov)
    if not np.isfinite(out).all():
        raise ValueError(CHOLESKY_ERROR)
    return out


def _prec_chol_full(cov):
    out = np.empty_like(cov)
    for k in range(cov.shape[0]):
        out[k] = _prec_chol_unchecked(cov[k])
    if not np.isfinite(out).all():
        raise ValueError(CHOLESKY_ERROR)
    return out


def _prec_chol_tied(cov):
    return _prec_chol_matrix(cov)


def _prec_chol_diag(cov):
    if np.any(np.less_equal(cov, 0.0)) or not np.all(np.isfinite(cov)):
        raise ValueError(CHOLESKY_ERROR)
    return 1.0 / np.sqrt(cov)


def _from_prec_matrix(prec: np.ndarray) -> np.ndarray:
    # U upper triangular with U U^T = P: flip, Cholesky, flip back.
    from scipy import linalg

    try:
        l = linalg.cholesky(prec[::-1, ::-1], lower=True, check_finite=False)
    except linalg.LinAlgError:
        raise ValueError("precisions_init must be symmetric positive-definite") from None
    return l[::-1, ::-1].copy()


def _from_prec_full(prec):
    return np.stack([_from_prec_matrix(p) for p in prec])


def _from_prec_tied(prec):
    return _from_prec_matrix(prec)


def _from_prec_diag(prec):
    return np.sqrt(prec)


def _precisions_full(pc):
    return pc @ np.swapaxes(pc, -1, -2)


def _precisions_tied(pc):
    return pc @ pc.T


def _precisions_diag(pc):
    return pc * pc


def _logdet_full(pc, d):
    return np.log(np.diagonal(pc, axis1=-2, axis2=-1)).sum(axis=-1)


def _logdet_tied(pc, d):
    return np.log(np.diag(pc)).sum()


def _logdet_diag(pc, d):
    return np.log(pc).sum(axis=1)


def _logdet_spherical(pc, d):
    return d * np.log(pc)


def _cov_spherical_from_trace(scatter, nk, reg_covar, d):
    return scatter / (_safe_nk(nk) * d) + reg_covar
