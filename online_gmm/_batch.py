"""Full-batch EM with several starts: scikit-learn's ``GaussianMixture.fit`` loop, on the shared core.

Used by :meth:`OnlineGaussianMixture.fit`, by the online warm-up, and by the pipeline's refits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from online_gmm._em import EMResult, GaussianParams, run_em
from online_gmm._init import FromResp, initial_params

__all__ = ["fit_em", "BatchInit"]


def fit_em(X: np.ndarray, *, n_components: int, covariance_type: str, init_params: str, n_init: int,
           rng: np.random.RandomState, reg_covar: float, tol: float, max_iter: int,
           sample_weight: np.ndarray | None = None, weights_init=None, means_init=None,
           precisions_init=None, start: GaussianParams | None = None, start_lower_bound: float = -np.inf,
           on_iter: Callable[[int, int, float, float], None] | None = None,
           short_iter: int | None = None,
           on_init: Callable[[int, EMResult | None], None] | None = None,
           e_step: Callable[[GaussianParams], Any] | None = None,
           from_resp: FromResp | None = None) -> EMResult:
    """Best of ``n_init`` EM runs by final lower bound (ties keep the first), as scikit-learn does.

    With ``short_iter``, the starts are compared after short runs instead: each start runs at most
    ``short_iter`` iterations, and only the best one continues to convergence (the "emEM" strategy
    of Biernacki, Celeux and Govaert, 2003, Computational Statistics & Data Analysis 41:561-575).
    The online warm-up uses it; ``fit`` does not (it reproduces scikit-learn).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    start : GaussianParams, optional
        Warm start: a single run from these parameters (``n_init`` is then ignored).
    on_iter : callable(init, n_iter, lower_bound, change), optional
        Progress callback (verbose output).
    on_init : callable(init, result), optional
        Called as each start begins (``result=None``) and after its EM run (its EMResult).
    short_iter : int, optional
        Iterations of each start's short run (see above); ``None`` runs every start to the end.
    e_step, from_resp : callable, optional
        Where the statistics are computed, for data that are not a NumPy array (array API input,
        :mod:`online_gmm._xp_fit`): ``e_step`` as for :func:`~online_gmm._em.run_em`, ``from_resp``
        as for :func:`~online_gmm._init.initial_params`. Default: the host kernels.

    Returns
    -------
    EMResult
        With ``stats`` the statistics of ``X`` from which the returned parameters were computed.
    """
    best: EMResult | None = None
    runs = 1 if start is not None else n_init
    for init in range(runs):
        if on_init is not None:
            on_init(init, None)
        if start is not None:
            params, lb0 = start, start_lower_bound
        else:
            params = initial_params(X, n_components=n_components, covariance_type=covariance_type,
                                    method=init_params, reg_covar=reg_covar, rng=rng,
                                    sample_weight=sample_weight, weights_init=weights_init,
                                    means_init=means_init, precisions_init=precisions_init,
                                    from_resp=from_resp)
            lb0 = -np.inf
        cb = None if on_iter is None else (lambda it, lb, ch, _i=init: on_iter(_i, it, lb, ch))
        short = short_iter is not None and runs > 1
        result = run_em(X, params, reg_covar=reg_covar, tol=tol,
                        max_iter=min(max_iter, short_iter) if short else max_iter,
                        sample_weight=sample_weight, lower_bound=lb0, on_iter=cb, e_step=e_step)
        if on_init is not None and max_iter > 0:
            on_init(init, result)
        if best is None or result.lower_bound > best.lower_bound:
            best = result
    assert best is not None
    if short_iter is not None and runs > 1 and not best.converged and best.n_iter < max_iter:
        # the best short run continues from its parameters; the iterations and bounds add up
        rest = run_em(X, best.params, reg_covar=reg_covar, tol=tol, max_iter=max_iter - best.n_iter,
                      sample_weight=sample_weight, lower_bound=best.lower_bound, e_step=e_step)
        best = EMResult(rest.params, best.n_iter + rest.n_iter, rest.lower_bound,
                        best.lower_bounds + rest.lower_bounds, rest.converged, rest.stats)
    return best


@dataclass
class BatchInit:
    """Picklable warm-up initialiser: ``BatchInit(...)(X, sample_weight)`` runs :func:`fit_em`."""

    n_components: int
    covariance_type: str
    init_params: str
    n_init: int
    rng: np.random.RandomState
    reg_covar: float
    tol: float
    max_iter: int
    weights_init: Any = None
    means_init: Any = None
    precisions_init: Any = None
    short_iter: int | None = None

    def __call__(self, X: np.ndarray, sample_weight: np.ndarray | None) -> EMResult:
        return fit_em(X, n_components=self.n_components, covariance_type=self.covariance_type,
                      init_params=self.init_params, n_init=self.n_init, rng=self.rng,
                      reg_covar=self.reg_covar, tol=self.tol, max_iter=self.max_iter,
                      sample_weight=sample_weight, weights_init=self.weights_init,
                      means_init=self.means_init, precisions_init=self.precisions_init,
                      short_iter=self.short_iter)
