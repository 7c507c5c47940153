"""Per-covariance-type Gaussian kernels.

Every covariance type supplies the same small set of functions, gathered in a :class:`Kernel` and
chosen by one lookup in :data:`KERNELS` on ``covariance_type``:

``scatter_shape(K, D)``
    shape of the centred scatter kept by :class:`~online_gmm._suffstats.SufficientStatistics`;
``chunk_scatter(Xc, resp, nk, means, buf, squares)``
    centred scatter of one chunk of data about the chunk's own responsibility-weighted means
    (``squares``: the squares ``log_prob`` left for the same chunk, diag and spherical only);
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
    it leaves the chunk centred on ``prep["c"]`` in ``buf["centred"]`` (and, for diag and
    spherical, its squares in ``buf["squares"]``) so that the statistics of the same chunk need
    no second pass over the raw data;
``n_parameters(K, D)``
    free covariance parameters, for BIC/AIC.

:data:`PASS_SUMS` adds, for full, diag and spherical, how a whole E-step pass sums its chunks' raw
moments about the shared centre and corrects them once (:class:`PassSums`, used by
:class:`~online_gmm._pass_sums.PassAccumulator`).

The data is always shifted by a centre ``c`` (the mean of the component means) before products are
formed, so that data offset by 1e8 loses no precision in the expansions used for the log-densities
of tied, diag and spherical covariances and for the full, diag and spherical scatters (whose
remaining cancellation, a component tight in some feature relative to its distance from ``c``, is
caught by a guard that recomputes just those entries centred on the component's own mean; a
feature constant over the chunk, which cancels completely, has exactly zero scatter and is set so).

The kernels' functions live in modules of their own: :mod:`online_gmm._scatter` (chunk scatter,
Chan's cross term), :mod:`online_gmm._pass_kernels` (:data:`PASS_SUMS`), :mod:`online_gmm._precision`
(covariances, precision Cholesky factors), :mod:`online_gmm._log_prob` (log-densities,
:data:`ROW_LAYOUT`) and :mod:`online_gmm._blocks` (the triangular blocks of full covariances); this
module gathers them per covariance type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from online_gmm._blocks import ONE_PASS_FLOATS  # noqa: F401 - re-exported (online_gmm._em imports it)
from online_gmm._log_prob import (
    LOG_2PI,
    ROW_LAYOUT,
    _log_prob_diag,
    _log_prob_full,
    _log_prob_spherical,
    _log_prob_tied,
    _prepare_diag,
    _prepare_full,
    _prepare_spherical,
    _prepare_tied,
)
from online_gmm._pass_kernels import PASS_SUMS, PassSums, sums_means  # noqa: F401 - re-exported
from online_gmm._precision import (
    CHOLESKY_ERROR,
    _cov_diag,
    _cov_full,
    _cov_spherical_from_trace,
    _cov_tied,
    _from_prec_diag,
    _from_prec_full,
    _from_prec_tied,
    _logdet_diag,
    _logdet_full,
    _logdet_spherical,
    _logdet_tied,
    _prec_chol_diag,
    _prec_chol_full,
    _prec_chol_tied,
    _precisions_diag,
    _precisions_full,
    _precisions_tied,
)
from online_gmm._scatter import (
    _chan_diag,
    _chan_full,
    _chan_spherical,
    _chan_tied,
    _chunk_scatter_diag,
    _chunk_scatter_full,
    _chunk_scatter_spherical,
    _chunk_scatter_tied,
)

__all__ = ["Kernel", "KERNELS", "PASS_SUMS", "PassSums", "ROW_LAYOUT", "get_kernel", "CHOLESKY_ERROR",
           "LOG_2PI"]


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
