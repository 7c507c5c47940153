"""Initial parameters: k-means, k-means++, random, random_from_data, or given by the user.

The random draws follow :class:`sklearn.mixture.GaussianMixture` step for step, so that the same
``random_state`` gives the same starting point, and the starting parameters come from the same
:class:`~online_gmm._suffstats.SufficientStatistics` M-step as every later iteration.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from online_gmm._em import GaussianParams
from online_gmm._gaussian import get_kernel
from online_gmm._suffstats import SufficientStatistics

__all__ = ["INIT_METHODS", "initial_resp", "initial_params", "check_inits"]

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")

#: ``from_resp(X, resp, sample_weight, covariance_type=...)`` -> SufficientStatistics
FromResp = Callable[..., SufficientStatistics]


def initial_resp(X: np.ndarray, n_components: int, method: str, rng: np.random.RandomState,
                 sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Responsibilities of shape (n_samples, n_components) that start EM.

    scikit-learn's k-means is imported here, where it is used: a streaming job reaches its first
    record without it (its warm-up fit, at the end of the warm-up, is the first to need it).
    """
    n = X.shape[0]
    if method == "kmeans":
        from sklearn.cluster import KMeans
        resp = np.zeros((n, n_components))
        labels = KMeans(n_clusters=n_components, n_init=1, random_state=rng).fit(
            X, sample_weight=sample_weight).labels_
        resp[np.arange(n), labels] = 1.0
    elif method == "random":
        resp = rng.uniform(size=(n, n_components))
        resp /= resp.sum(axis=1)[:, None]
    elif method == "random_from_data":
        resp = np.zeros((n, n_components))
        idx = rng.choice(n, size=n_components, replace=False)
        resp[idx, np.arange(n_components)] = 1.0
    elif method == "k-means++":
        from sklearn.cluster import kmeans_plusplus
        resp = np.zeros((n, n_components))
        _, idx = kmeans_plusplus(X, n_components, random_state=rng, sample_weight=sample_weight)
        resp[idx, np.arange(n_components)] = 1.0
    else:
        raise ValueError(f"init_params must be one of {INIT_METHODS}, got {method!r}")
    return resp


def check_inits(weights_init, means_init, precisions_init, *, n_components: int, n_features: int,
                covariance_type: str):
    """Validate user-given starting parameters; return them as float arrays (or None)."""
    if weights_init is not None:
        weights_init = np.asarray(weights_init, dtype=np.float64)
        if weights_init.shape != (n_components,):
            raise ValueError(
                f"weights_init must have shape ({n_components},), got {weights_init.shape}")
        if np.any(weights_init < 0) or np.any(weights_init > 1) or not np.all(np.isfinite(weights_init)):
            # plain Python floats in the message: "1.2", not "np.float64(1.2)"
            raise ValueError(
                f"weights_init must be in [0, 1], got min {float(weights_init.min())!r}, max "
                f"{float(weights_init.max())!r}")
        if not np.allclose(weights_init.sum(), 1.0, rtol=0, atol=1e-6):
            raise ValueError(f"weights_init must sum to 1, got {float(weights_init.sum())!r}")
    if means_init is not None:
        means_init = np.asarray(means_init, dtype=np.float64)
        if means_init.shape != (n_components, n_features):
            raise ValueError(
                f"means_init must have shape ({n_components}, {n_features}), got {means_init.shape}")
        if not np.all(np.isfinite(means_init)):
            raise ValueError("means_init contains NaN or infinity")
    if precisions_init is not None:
        precisions_init = np.asarray(precisions_init, dtype=np.float64)
        expected = get_kernel(covariance_type).cov_shape(n_components, n_features)
        if precisions_init.shape != expected:
            raise ValueError(
                f"precisions_init for covariance_type={covariance_type!r} must have shape "
                f"{expected}, got {precisions_init.shape}")
        if not np.all(np.isfinite(precisions_init)):
            raise ValueError("precisions_init contains NaN or infinity")
        if covariance_type in ("diag", "spherical") and np.any(precisions_init <= 0):
            raise ValueError(f"precisions_init for {covariance_type!r} must be positive")
        if covariance_type in ("full", "tied"):
            mats = precisions_init.reshape(-1, n_features, n_features)
            if not np.allclose(mats, np.swapaxes(mats, -1, -2)):
                raise ValueError(f"precisions_init for {covariance_type!r} must be symmetric")
    return weights_init, means_init, precisions_init


def initial_params(X: Any, *, n_components: int, covariance_type: str, method: str,
                   reg_covar: float, rng: np.random.RandomState, sample_weight: np.ndarray | None = None,
                   weights_init=None, means_init=None, precisions_init=None,
                   from_resp: FromResp | None = None) -> GaussianParams:
    """Starting parameters, as :class:`sklearn.mixture.GaussianMixture` computes them.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Or an array of another namespace with ``from_resp`` (only 'random' and 'random_from_data',
        whose draws read nothing but the number of rows).
    weights_init, means_init, precisions_init : array-like or None
        Already validated by :func:`check_inits`; each one given overrides the data-derived value.
    from_resp : callable, optional
        ``from_resp(X, resp, sample_weight, covariance_type=...)`` -> host
        :class:`~online_gmm._suffstats.SufficientStatistics`, ``resp`` a host array of shape
        (n_samples, n_components); default :meth:`SufficientStatistics.from_resp`. Array API input
        passes the device's (:func:`online_gmm._xp_fit.device_from_resp`).
    """
    stats_of = SufficientStatistics.from_resp if from_resp is None else from_resp
    resp = initial_resp(X, n_components, method, rng, sample_weight)
    stats = stats_of(X, resp, sample_weight, covariance_type=covariance_type)
    kernel = get_kernel(covariance_type)
    cov = stats.covariances(reg_covar)
    if covariance_type == "tied" and method in ("k-means++", "random_from_data"):
        # One point per component carries no within-component spread; start from the pooled data
        # covariance instead (scikit-learn's tied formula here depends on the origin of X).
        whole = stats_of(X, np.ones((X.shape[0], 1)), sample_weight, covariance_type="tied")
        cov = whole.covariances(reg_covar)
    weights = weights_init.copy() if weights_init is not None else (
        (stats.weights + 10 * np.finfo(float).eps)
        / (X.shape[0] if sample_weight is None else float(np.sum(sample_weight))))
    means = means_init.copy() if means_init is not None else stats.means
    if precisions_init is None:
        return GaussianParams(covariance_type, weights, means, cov, kernel.precision_cholesky(cov))
    return GaussianParams(covariance_type, weights, means, None,
                          kernel.precision_cholesky_from_precisions(precisions_init))
