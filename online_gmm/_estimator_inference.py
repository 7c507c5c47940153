"""Inference with a fitted :class:`~online_gmm.estimator.OnlineGaussianMixture`: log-likelihoods,
posteriors and labels, the information criteria (BIC, AIC) and sampling; the mixin
:class:`_InferenceMixin`.
"""

from __future__ import annotations

import numpy as np

from online_gmm._array_api import to_space
from online_gmm.model_spec import check_random_state


class _InferenceMixin:
    """Scoring, prediction, BIC/AIC and sampling (for :class:`~online_gmm.estimator.OnlineGaussianMixture`)."""

    def score_samples(self, X) -> np.ndarray:
        """Log-likelihood of each sample, shape (n_samples,).

        Decreases with the distance from the components up to the largest finite floats: -inf where
        the squared Mahalanobis distance overflows, never NaN.
        """
        X = self._host(X, "score_samples")
        out = self._scorer().score_samples(X).astype(X.dtype, copy=False)
        return to_space(out, self.__dict__.get("_space"))

    def score(self, X, y=None) -> float:
        """Mean log-likelihood of ``X`` (the mean of ``score_samples``, in its dtype, as
        scikit-learn computes it)."""
        X = self._host(X, "score")
        return float(self._scorer().score_samples(X).astype(X.dtype, copy=False).mean())

    def predict_proba(self, X) -> np.ndarray:
        """Posterior probability of each component, shape (n_samples, n_components).

        A row so far from every component that its density is zero under all of them
        (``score_samples`` gives -inf) belongs to the component nearest it in Mahalanobis distance
        (evaluated on the row scaled down by a power of two; equal distances share equally).
        """
        X = self._host(X, "predict_proba")
        log_resp, _ = self._scorer().log_resp(X)
        return to_space(np.exp(log_resp).astype(X.dtype, copy=False), self.__dict__.get("_space"))

    def predict(self, X) -> np.ndarray:
        """Most probable component of each sample, shape (n_samples,) (``predict_proba``'s argmax)."""
        X = self._host(X, "predict")
        return to_space(self._scorer().predict(X), self.__dict__.get("_space"))

    def _estimate_weighted_log_prob(self, X) -> np.ndarray:
        return self._scorer().weighted_log_prob(X)

    def bic(self, X) -> float:
        """Bayesian information criterion of the model on ``X`` (lower is better)."""
        X = self._host(X, "bic")
        log_lik = float(self._scorer().score_samples(X).sum())
        return float(-2 * log_lik + self._n_parameters() * np.log(X.shape[0]))

    def aic(self, X) -> float:
        """Akaike information criterion of the model on ``X`` (lower is better)."""
        X = self._host(X, "aic")
        return float(-2 * float(self._scorer().score_samples(X).sum()) + 2 * self._n_parameters())

    def _n_parameters(self) -> int:
        self._check_fitted()
        return self._params_.n_parameters()

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw samples from the fitted mixture.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            float64, as scikit-learn's (in the fitted data's namespace and on its device under
            array API dispatch).
        y : ndarray of shape (n_samples,)
            Component of each sample.
        """
        self._check_fitted()
        if n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples!r}. It must be >= 1.")
        rng = check_random_state(self.random_state)
        params = self._params_                          # float64 NumPy, whatever was published
        weights, means, cov = params.weights, params.means, params.covariance_matrices()
        counts = rng.multinomial(n_samples, weights)
        d = means.shape[1]
        if self.covariance_type == "full":
            X = np.vstack([rng.multivariate_normal(m, c, int(n)) for m, c, n in
                           zip(means, cov, counts)])
        elif self.covariance_type == "tied":
            X = np.vstack([rng.multivariate_normal(m, cov, int(n)) for m, n in zip(means, counts)])
        else:
            X = np.vstack([m + rng.standard_normal(size=(n, d)) * np.sqrt(c) for m, c, n in
                           zip(means, cov, counts)])
        y = np.concatenate([np.full(n, j, dtype=int) for j, n in enumerate(counts)])
        space = self.__dict__.get("_space")
        return to_space(X, space), to_space(y, space)
