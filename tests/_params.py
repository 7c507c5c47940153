"""Random mixture parameters for tests, in every covariance type (shared by several test files)."""

import numpy as np

from online_gmm._em import GaussianParams
from online_gmm._gaussian import get_kernel


def random_params(ctype, k=3, d=4, seed=0, mean_scale=3.0, weight_alpha=1.0):
    """A valid ``GaussianParams`` with ``k`` components in ``d`` features."""
    rng = np.random.RandomState(seed)
    means = rng.normal(0, mean_scale, (k, d))
    weights = rng.dirichlet(np.ones(k) * weight_alpha)
    if ctype == "full":
        a = rng.normal(size=(k, d, d))
        cov = a @ np.swapaxes(a, 1, 2) + np.eye(d)
    elif ctype == "tied":
        a = rng.normal(size=(d, d))
        cov = a @ a.T + np.eye(d)
    elif ctype == "diag":
        cov = rng.uniform(0.5, 3.0, (k, d))
    else:
        cov = rng.uniform(0.5, 3.0, k)
    return GaussianParams(ctype, weights, means, cov, get_kernel(ctype).precision_cholesky(cov))


def dense_cov(params, k):
    """Component ``k``'s covariance as a (d, d) matrix, whatever the covariance type."""
    cov = params.covariances
    d = params.n_features
    return {"full": lambda: cov[k], "tied": lambda: cov, "diag": lambda: np.diag(cov[k]),
            "spherical": lambda: np.eye(d) * cov[k]}[params.covariance_type]()
