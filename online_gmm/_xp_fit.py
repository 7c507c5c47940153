"""Full-batch EM on data that stays on its device (array API dispatch): :func:`fit_em_xp`.

The EM loop is the shared :func:`~online_gmm._em.run_em`, given the device E-step of
:class:`~online_gmm._xp_scorer.XpScorer`; the M-step runs on the host on the statistics the E-step
sends back. The starts are those of :func:`~online_gmm._batch.fit_em` for the two methods scikit-learn
allows under dispatch ('random', 'random_from_data'): the random draws are made on the host by
:func:`~online_gmm._init.initial_resp` with the same ``RandomState`` calls as for NumPy input (they
read only the number of rows), so the same ``random_state`` gives the same start; the
responsibilities drawn cross to the device once per start, and the starting statistics are computed
there (:func:`~online_gmm._xp_scorer.resp_statistics`).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from online_gmm._array_api import Space
from online_gmm._em import EMResult, GaussianParams, run_em
from online_gmm._gaussian import get_kernel
from online_gmm._init import initial_resp
from online_gmm._xp_scorer import XpScorer, put, resp_statistics, stats_dtype

__all__ = ["fit_em_xp", "initial_params_xp"]


def initial_params_xp(X: Any, space: Space, *, n_components: int, covariance_type: str, method: str,
                      reg_covar: float, rng: np.random.RandomState,
                      sample_weight: np.ndarray | None = None, weights_init=None, means_init=None,
                      precisions_init=None) -> GaussianParams:
    """Starting parameters of :func:`~online_gmm._init.initial_params`, from data on the device.

    Parameters
    ----------
    X : array of shape (n_samples, n_features), on the device
    space : Space
    method : {'random', 'random_from_data'}
    sample_weight : ndarray of shape (n_samples,), host, or None
    weights_init, means_init, precisions_init : ndarray or None
        Host, validated by :func:`~online_gmm._init.check_inits`.

    Returns
    -------
    GaussianParams
        Host, float64.
    """
    dtype = stats_dtype(space)
    n = X.shape[0]
    w = None if sample_weight is None else put(sample_weight, space, dtype)
    resp = put(initial_resp(X, n_components, method, rng, sample_weight), space, dtype)
    stats = resp_statistics(X, resp, w, covariance_type=covariance_type, space=space)
    cov = stats.covariances(reg_covar)
    if covariance_type == "tied" and method == "random_from_data":
        # one point per component has no spread: the pooled data covariance, as initial_params
        ones = space.xp.ones((n, 1), dtype=dtype, device=space.device)
        cov = resp_statistics(X, ones, w, covariance_type="tied", space=space).covariances(reg_covar)
    weights = weights_init.copy() if weights_init is not None else (
        (stats.weights + 10 * np.finfo(float).eps)
        / (n if sample_weight is None else float(np.sum(sample_weight))))
    means = means_init.copy() if means_init is not None else stats.means
    kernel = get_kernel(covariance_type)
    if precisions_init is None:
        return GaussianParams(covariance_type, weights, means, cov, kernel.precision_cholesky(cov))
    return GaussianParams(covariance_type, weights, means, None,
                          kernel.precision_cholesky_from_precisions(precisions_init))


def fit_em_xp(X: Any, space: Space, *, n_components: int, covariance_type: str, init_params: str,
              n_init: int, rng: np.random.RandomState, reg_covar: float, tol: float, max_iter: int,
              sample_weight: np.ndarray | None = None, weights_init=None, means_init=None,
              precisions_init=None, start: GaussianParams | None = None,
              start_lower_bound: float = -np.inf,
              on_iter: Callable[[int, int, float, float], None] | None = None,
              on_init: Callable[[int, EMResult | None], None] | None = None) -> EMResult:
    """:func:`~online_gmm._batch.fit_em` (best of ``n_init`` runs) with the E-step on the device.

    Parameters
    ----------
    X : array of shape (n_samples, n_features), on the device
        Validated: finite, every value within +-:data:`~online_gmm._guards.MAX_ABS`.
    space : Space
    sample_weight : ndarray of shape (n_samples,), host, or None
        Sent to the device once.
    Others : as :func:`~online_gmm._batch.fit_em`.

    Returns
    -------
    EMResult
        With ``stats`` the (host) statistics the returned parameters were computed from.
    """
    w = None if sample_weight is None else put(sample_weight, space, stats_dtype(space))

    def e_step(params: GaussianParams):
        return XpScorer(params, space).expected_statistics(X, w)

    best: EMResult | None = None
    runs = 1 if start is not None else n_init
    for init in range(runs):
        if on_init is not None:
            on_init(init, None)
        if start is not None:
            params, lb0 = start, start_lower_bound
        else:
            params = initial_params_xp(X, space, n_components=n_components,
                                       covariance_type=covariance_type, method=init_params,
                                       reg_covar=reg_covar, rng=rng, sample_weight=sample_weight,
                                       weights_init=weights_init, means_init=means_init,
                                       precisions_init=precisions_init)
            lb0 = -np.inf
        cb = None if on_iter is None else (lambda it, lb, ch, _i=init: on_iter(_i, it, lb, ch))
        result = run_em(X, params, reg_covar=reg_covar, tol=tol, max_iter=max_iter,
                        sample_weight=sample_weight, lower_bound=lb0, on_iter=cb, e_step=e_step)
        if on_init is not None and max_iter > 0:
            on_init(init, result)
        if best is None or result.lower_bound > best.lower_bound:
            best = result
    assert best is not None
    return best
