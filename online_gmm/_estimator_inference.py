"""Inference with a fitted :class:`~online_gmm.estimator.OnlineGaussianMixture`: log-likelihoods,
posteriors and labels, the information criteria (BIC, AIC) and sampling; the mixin
:class:`_InferenceMixin`.
"""

from __future__ import annotations

import numpy as np

from online_gmm._array_api import check_same_space, dispatch_enabled, to_space
from online_gmm.model_spec import check_random_state


class _InferenceMixin:
    """Scoring, prediction, BIC/AIC and sampling (for :class:`~online_gmm.estimator.OnlineGaussianMixture`)."""

    def _evaluator(self, X, method: str):
        """(``X`` validated, its scorer): under array API dispatch, for a model fitted on a device,
        ``X`` stays there (checked to be in the fitted namespace and on the fitted device) and the
        scorer is the device one, whose outputs are already in place; otherwise ``X`` is a NumPy
        array and the host :class:`~online_gmm._em.Scorer` evaluates it."""
        space = self.__dict__.get("_space")
        if space is not None and dispatch_enabled():
            self._check_fitted()
            check_same_space(X, self, method)
            return self._validate_on_device(X, space, reset=False), self._device_scorer()
        X = self._host(X, method)
        return X, self._scorer()

    def _placed(self, out, X):
        """A host output cast to the data's float dtype and moved to the fitted namespace and device
        (a device output is returned as it is)."""
        if not isinstance(out, np.ndarray):
            return out
        if out.dtype.kind == "f":
            out = out.astype(X.dtype, copy=False)
        return to_space(out, self.__dict__.get("_space"))

    def _log_likelihood(self, log_p) -> float:
        """The sum of the log-densities ``log_p`` (host or device), as a float."""
        if isinstance(log_p, np.ndarray):
            return float(log_p.sum())
        from online_gmm._xp_scorer import stats_dtype
        space = self._space
        return float(space.xp.sum(space.xp.astype(log_p, stats_dtype(space))))

    def score_samples(self, X) -> np.ndarray:
        """Log-likelihood of each sample, shape (n_samples,).

        Decreases with the distance from the components up to the largest finite floats: -inf where
        the squared Mahalanobis distance overflows, never NaN.
        """
        X, scorer = self._evaluator(X, "score_samples")
        return self._placed(scorer.score_samples(X), X)

    def score(self, X, y=None) -> float:
        """Mean log-likelihood of ``X`` (the mean of ``score_samples``, in its dtype, as
        scikit-learn computes it)."""
        X, scorer = self._evaluator(X, "score")
        log_p = scorer.score_samples(X)
        if isinstance(log_p, np.ndarray):
            return float(log_p.astype(X.dtype, copy=False).mean())
        return float(self._space.xp.mean(log_p))

    def predict_proba(self, X) -> np.ndarray:
        """Posterior probability of each component, shape (n_samples, n_components).

        A row so far from every component that its density is zero under all of them
        (``score_samples`` gives -inf) belongs to the component nearest it in Mahalanobis distance
        (evaluated on the row scaled down by a power of two; equal distances share equally).
        """
        X, scorer = self._evaluator(X, "predict_proba")
        log_resp, _ = scorer.log_resp(X)
        if isinstance(log_resp, np.ndarray):
            return self._placed(np.exp(log_resp), X)
        return self._space.xp.exp(log_resp)

    def predict(self, X) -> np.ndarray:
        """Most probable component of each sample, shape (n_samples,) (``predict_proba``'s argmax)."""
        X, scorer = self._evaluator(X, "predict")
        return self._placed(scorer.predict(X), X)

    def _estimate_weighted_log_prob(self, X) -> np.ndarray:
        return self._scorer().weighted_log_prob(X)

    def bic(self, X) -> float:
        """Bayesian information criterion of the model on ``X`` (lower is better)."""
        X, scorer = self._evaluator(X, "bic")
        log_lik = self._log_likelihood(scorer.score_samples(X))
        return float(-2 * log_lik + self._n_parameters() * np.log(X.shape[0]))

    def aic(self, X) -> float:
        """Akaike information criterion of the model on ``X`` (lower is better)."""
        X, scorer = self._evaluator(X, "aic")
        return float(-2 * self._log_likelihood(scorer.score_samples(X)) + 2 * self._n_parameters())

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
