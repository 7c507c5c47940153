"""Full-batch EM on data that stays on its device (array API dispatch): :func:`fit_em_xp`.

It is the shared :func:`~online_gmm._batch.fit_em` (best of ``n_init`` starts, the EM loop
:func:`~online_gmm._em.run_em`, the starting parameters of :func:`~online_gmm._init.initial_params`)
told where the statistics are computed: the E-step of
:class:`~online_gmm._xp_scorer.XpScorer`, and :func:`~online_gmm._xp_scorer.resp_statistics` for the
starts; the M-step runs on the host on the statistics they send back. The starts are those of NumPy
input for the two methods scikit-learn allows under dispatch ('random', 'random_from_data'): the
random draws are made on the host by :func:`~online_gmm._init.initial_resp` with the same
``RandomState`` calls (they read only the number of rows), so the same ``random_state`` gives the same
start; the responsibilities drawn cross to the device once per start.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from online_gmm._array_api import Space
from online_gmm._batch import fit_em
from online_gmm._em import EMResult, GaussianParams
from online_gmm._init import FromResp
from online_gmm._suffstats import SufficientStatistics
from online_gmm._xp_scorer import XpScorer, put, resp_statistics, stats_dtype

__all__ = ["device_from_resp", "fit_em_xp"]


def device_from_resp(space: Space) -> FromResp:
    """``from_resp`` of :func:`~online_gmm._init.initial_params` for data on ``space``'s device.

    The host responsibilities (and weights) cross to the device once; the statistics are computed
    there and come back (host, float64).
    """
    dtype = stats_dtype(space)

    def from_resp(X: Any, resp: np.ndarray, sample_weight: np.ndarray | None, *,
                  covariance_type: str) -> SufficientStatistics:
        w = None if sample_weight is None else put(sample_weight, space, dtype)
        return resp_statistics(X, put(resp, space, dtype), w, covariance_type=covariance_type,
                               space=space)

    return from_resp


def fit_em_xp(X: Any, space: Space, *, sample_weight: np.ndarray | None = None,
              **kwargs: Any) -> EMResult:
    """:func:`~online_gmm._batch.fit_em` with the statistics computed on the device.

    Parameters
    ----------
    X : array of shape (n_samples, n_features), on the device
        Validated: finite, every value within +-:data:`~online_gmm._guards.MAX_ABS`.
    space : Space
    sample_weight : ndarray of shape (n_samples,), host, or None
        Sent to the device once for the E-step.
    **kwargs
        As :func:`~online_gmm._batch.fit_em` (``init_params`` 'random' or 'random_from_data').

    Returns
    -------
    EMResult
        With ``stats`` the (host) statistics the returned parameters were computed from.
    """
    w = None if sample_weight is None else put(sample_weight, space, stats_dtype(space))

    def e_step(params: GaussianParams):
        return XpScorer(params, space).expected_statistics(X, w)

    return fit_em(X, sample_weight=sample_weight, e_step=e_step, from_resp=device_from_resp(space),
                  **kwargs)
