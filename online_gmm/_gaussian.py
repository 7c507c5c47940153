"""Per-covariance-type Gaussian kernels.

Every covariance type supplies the same small set of functions, gathered in a :class:`Kernel` and
chosen by one lookup in :data:`KERNELS` on ``covariance_type``:

``scatter_shape(K, D)``
    shape of the centred scatter kept by :class:`~online_gmm._suffstats.SufficientStatistics`;
``chunk_scatter(Xc, resp, nk, means)``
    centred scatter of one chunk of data about the chunk's own responsibility-weighted means;
``chan_term(wa, wb, w, delta)``
    the cross term Chan's formula adds to the summed scatters when two statistics merge;
``covariances(scatter, nk, reg_covar)``
    covariances from scatter (the M-step), with ``reg_covar`` on the diagonal;
``precision_cholesky(cov)`` / ``precision_cholesky_from_precisions(prec)`` / ``precisions(prec_chol)``
    conversions in scikit-learn's conventions: the precision Cholesky factor ``U`` satisfies
    ``precision = U @ U.T`` and ``U`` is upper triangular;
``log_det(prec_chol, D)``
    log-determinant of the precision Cholesky factor, per component;
``prepare(means, prec_chol)`` and ``log_prob(X, prep, out, buf)``
    the log-density of every sample under every component, through the precision Cholesky factor;
``n_parameters(K, D)``
    free covariance parameters, for BIC/AIC.

The data is always shifted by a centre ``c`` (the mean of the component means) before products are
formed, so that data offset by 1e8 loses no precision in the expansions used for tied, diag and
spherical covariances.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import linalg

__all__ = ["Kernel", "KERNELS", "get_kernel", "CHOLESKY_ERROR", "LOG_2PI"]

LOG_2PI = float(np.log(2.0 * np.pi))

CHOLESKY_ERROR = (
    "Fitting the mixture model failed because some components have ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Try to decrease the "
    "number of components, increase reg_covar, or scale the input data."
)

#: relative cancellation beyond which a shifted-moment scatter is recomputed directly
_CANCEL = 1e-6


# --------------------------------------------------------------------------------------------------
# scatter of one chunk, centred on the chunk's own means
# --------------------------------------------------------------------------------------------------
def _chunk_scatter_full(Xc: np.ndarray, resp: np.ndarray, nk: np.ndarray, means: np.ndarray,
                        buf: np.ndarray | None = None) -> np.ndarray:
    n, d = Xc.shape
    k_comp = resp.shape[1]
    out = np.empty((k_comp, d, d))
    z = buf[:n] if buf is not None and buf.shape[0] >= n else np.empty((n, d))
    sq = np.sqrt(resp)
    for k in range(k_comp):
        if nk[k] <= 0.0:
            out[k] = 0.0
            continue
        np.subtract(Xc, means[k], out=z)
        z *= sq[:, k:k + 1]
        np.matmul(z.T, z, out=out[k])
    return out


def _chunk_scatter_tied(Xc, resp, nk, means, buf=None):
    return _chunk_scatter_full(Xc, resp, nk, means, buf).sum(axis=0)


def _chunk_scatter_diag(Xc, resp, nk, means, buf=None):
    # Shifted moments about the chunk centre c, then corrected per component; a component whose
    # correction cancels most of the digits is recomputed directly, centred on its own mean.
    n, d = Xc.shape
    c = means.T @ nk / max(nk.sum(), np.finfo(float).tiny)
    z = np.subtract(Xc, c, out=buf[:n] if buf is not None and buf.shape[0] >= n else None)
    z *= z
    raw = resp.T @ z                                  # (K, D): sum_i r_ik (x_i - c)^2
    shift = means - c
    corr = nk[:, None] * shift * shift
    out = raw - corr
    bad = np.any(out < _CANCEL * raw, axis=1) & (nk > 0)
    for k in np.flatnonzero(bad):
        dz = Xc - means[k]
        out[k] = resp[:, k] @ (dz * dz)
    np.maximum(out, 0.0, out=out)
    return out


def _chunk_scatter_spherical(Xc, resp, nk, means, buf=None):
    return _chunk_scatter_diag(Xc, resp, nk, means, buf).sum(axis=1)


# --------------------------------------------------------------------------------------------------
# Chan's cross term: scatter(a + b) = scatter(a) + scatter(b) + term
# --------------------------------------------------------------------------------------------------
def _coef(wa, wb, w):
    return np.divide(wa * wb, w, out=np.zeros_like(w), where=w > 0)


def _chan_full(wa, wb, w, delta):
    c = _coef(wa, wb, w)
    return c[:, None, None] * delta[:, :, None] * delta[:, None, :]


def _chan_tied(wa, wb, w, delta):
    c = _coef(wa, wb, w)
    return (c[:, None] * delta).T @ delta


def _chan_diag(wa, wb, w, delta):
    return _coef(wa, wb, w)[:, None] * delta * delta


def _chan_spherical(wa, wb, w, delta):
    return _coef(wa, wb, w) * np.einsum("kd,kd->k", delta, delta)


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
def _prec_chol_matrix(cov: np.ndarray) -> np.ndarray:
    try:
        cov_chol = linalg.cholesky(cov, lower=True, check_finite=False)
    except linalg.LinAlgError:
        raise ValueError(CHOLESKY_ERROR) from None
    if not np.all(np.isfinite(cov_chol)):
        raise ValueError(CHOLESKY_ERROR)
    return linalg.solve_triangular(cov_chol, np.eye(cov.shape[0]), lower=True,
                                   check_finite=False).T


def _prec_chol_full(cov):
    return np.stack([_prec_chol_matrix(c) for c in cov])


def _prec_chol_tied(cov):
    return _prec_chol_matrix(cov)


def _prec_chol_diag(cov):
    if np.any(np.less_equal(cov, 0.0)) or not np.all(np.isfinite(cov)):
        raise ValueError(CHOLESKY_ERROR)
    return 1.0 / np.sqrt(cov)


def _from_prec_matrix(prec: np.ndarray) -> np.ndarray:
    # U upper triangular with U U^T = P: flip, Cholesky, flip back.
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


# --------------------------------------------------------------------------------------------------
# log-density: prepare once per parameter set, evaluate per chunk into caller's buffers
# --------------------------------------------------------------------------------------------------
def _centre(means):
    return means.mean(axis=0)


def _prepare_full(means, pc):
    k_comp, d = means.shape
    c = _centre(means)
    u_all = np.ascontiguousarray(np.transpose(pc, (1, 0, 2)).reshape(d, k_comp * d))
    b_all = np.einsum("kd,kde->ke", means - c, pc).reshape(-1)
    return {"c": c, "u": u_all, "b": b_all, "logdet": _logdet_full(pc, d), "K": k_comp, "D": d}


def _log_prob_full(X, prep, out, buf):
    n = X.shape[0]
    k_comp, d = prep["K"], prep["D"]
    xc = np.subtract(X, prep["c"], out=buf["xc"][:n])
    y = np.matmul(xc, prep["u"], out=buf["y"][:n])
    y -= prep["b"]
    y *= y
    np.sum(y.reshape(n, k_comp, d), axis=2, out=out)
    return _finish(out, prep)


def _prepare_tied(means, pc):
    k_comp, d = means.shape
    c = _centre(means)
    b = (means - c) @ pc
    return {"c": c, "u": pc, "b": b, "bt2": np.ascontiguousarray(-2.0 * b.T),
            "bb": np.einsum("kd,kd->k", b, b), "logdet": np.full(k_comp, _logdet_tied(pc, d)),
            "K": k_comp, "D": d}


def _log_prob_tied(X, prep, out, buf):
    n = X.shape[0]
    xc = np.subtract(X, prep["c"], out=buf["xc"][:n])
    y = np.matmul(xc, prep["u"], out=buf["y"][:n, : prep["D"]])
    np.matmul(y, prep["bt2"], out=out)
    y *= y
    out += y.sum(axis=1)[:, None]
    out += prep["bb"]
    np.maximum(out, 0.0, out=out)
    return _finish(out, prep)


def _prepare_diag(means, pc):
    k_comp, d = means.shape
    c = _centre(means)
    prec = pc * pc
    mc = means - c
    return {"c": c, "pT": np.ascontiguousarray(prec.T), "mpT2": np.ascontiguousarray(-2.0 * (mc * prec).T),
            "mpm": np.einsum("kd,kd->k", mc * mc, prec), "logdet": _logdet_diag(pc, d),
            "K": k_comp, "D": d}


def _log_prob_diag(X, prep, out, buf):
    n = X.shape[0]
    xc = np.subtract(X, prep["c"], out=buf["xc"][:n])
    np.matmul(xc, prep["mpT2"], out=out)
    xc *= xc
    out += xc @ prep["pT"]
    out += prep["mpm"]
    np.maximum(out, 0.0, out=out)
    return _finish(out, prep)


def _prepare_spherical(means, pc):
    k_comp, d = means.shape
    c = _centre(means)
    prec = pc * pc
    mc = means - c
    return {"c": c, "prec": prec, "mpT2": np.ascontiguousarray(-2.0 * (mc * prec[:, None]).T),
            "mpm": np.einsum("kd,kd->k", mc, mc) * prec, "logdet": _logdet_spherical(pc, d),
            "K": k_comp, "D": d}


def _log_prob_spherical(X, prep, out, buf):
    n = X.shape[0]
    xc = np.subtract(X, prep["c"], out=buf["xc"][:n])
    np.matmul(xc, prep["mpT2"], out=out)
    xc *= xc
    out += np.outer(xc.sum(axis=1), prep["prec"])
    out += prep["mpm"]
    np.maximum(out, 0.0, out=out)
    return _finish(out, prep)


def _finish(out, prep):
    out += prep["D"] * LOG_2PI
    out *= -0.5
    out += prep["logdet"]
    return out


# --------------------------------------------------------------------------------------------------
# parameter counts (BIC/AIC)
# --------------------------------------------------------------------------------------------------
def _npar_full(k, d):
    return k * d * (d + 1) // 2


def _npar_tied(k, d):
    return d * (d + 1) // 2


def _npar_diag(k, d):
    return k * d


def _npar_spherical(k, d):
    return k


@dataclass(frozen=True)
class Kernel:
    """The functions one covariance type supplies (see the module docstring)."""

    name: str
    scatter_shape: Callable[[int, int], tuple]
    chunk_scatter: Callable
    chan_term: Callable
    covariances: Callable
    precision_cholesky: Callable
    precision_cholesky_from_precisions: Callable
    precisions: Callable
    log_det: Callable
    prepare: Callable
    log_prob: Callable
    n_parameters: Callable[[int, int], int]
    #: the shape of ``covariances_`` for K components and D features
    cov_shape: Callable[[int, int], tuple]


def _cov_spherical_from_trace(scatter, nk, reg_covar, d):
    return scatter / (_safe_nk(nk) * d) + reg_covar


KERNELS: dict[str, Kernel] = {
    "full": Kernel(
        "full", lambda k, d: (k, d, d), _chunk_scatter_full, _chan_full,
        lambda s, nk, reg, d: _cov_full(s, nk, reg), _prec_chol_full, _from_prec_full,
        _precisions_full, _logdet_full, _prepare_full, _log_prob_full, _npar_full,
        lambda k, d: (k, d, d),
    ),
    "tied": Kernel(
        "tied", lambda k, d: (d, d), _chunk_scatter_tied, _chan_tied,
        lambda s, nk, reg, d: _cov_tied(s, nk, reg), _prec_chol_tied, _from_prec_tied,
        _precisions_tied, _logdet_tied, _prepare_tied, _log_prob_tied, _npar_tied,
        lambda k, d: (d, d),
    ),
    "diag": Kernel(
        "diag", lambda k, d: (k, d), _chunk_scatter_diag, _chan_diag,
        lambda s, nk, reg, d: _cov_diag(s, nk, reg), _prec_chol_diag, _from_prec_diag,
        _precisions_diag, _logdet_diag, _prepare_diag, _log_prob_diag, _npar_diag,
        lambda k, d: (k, d),
    ),
    "spherical": Kernel(
        "spherical", lambda k, d: (k,), _chunk_scatter_spherical, _chan_spherical,
        _cov_spherical_from_trace, _prec_chol_diag, _from_prec_diag,
        _precisions_diag, _logdet_spherical, _prepare_spherical, _log_prob_spherical, _npar_spherical,
        lambda k, d: (k,),
    ),
}


def get_kernel(covariance_type: str) -> Kernel:
    """Return the :class:`Kernel` for ``covariance_type`` ('full', 'tied', 'diag' or 'spherical')."""
    try:
        return KERNELS[covariance_type]
    except KeyError:
        raise ValueError(
            f"covariance_type must be one of {sorted(KERNELS)}, got {covariance_type!r}"
        ) from None
