"""The fitted state of :class:`~online_gmm.estimator.OnlineGaussianMixture`: the mixin
:class:`_FittedStateMixin`.

Publishing parameters as the fitted attributes (in the fitted data's dtype, namespace and device),
adopting another front end's :class:`~online_gmm._online.OnlineEM`, the provisional fitted attributes
of a model still warming up, the fitted check, and the state the other methods read (``stats_``,
``n_samples_seen_``, ``reseeds_``, the scorer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from online_gmm._array_api import to_space
from online_gmm._em import GaussianParams
from online_gmm._suffstats import SufficientStatistics

if TYPE_CHECKING:
    from online_gmm._online import OnlineEM
    from online_gmm.estimator import OnlineGaussianMixture

#: the fitted attributes that, while ``partial_fit`` is warming up, come from the provisional fit
_PROVISIONAL_NAMES = frozenset({"_params_", "weights_", "means_", "covariances_",
                                "precisions_cholesky_"})


class _FittedStateMixin:
    """The fitted attributes and state (for :class:`~online_gmm.estimator.OnlineGaussianMixture`)."""

    def _adopt(self, online: OnlineEM) -> OnlineGaussianMixture:
        """Make ``online`` (past its warm-up, e.g. a pipeline's) this model's fitted state; returns self.

        The model shares ``online``: it follows the updates made to it until its next fit. A model
        not fitted by EM reports ``converged_=False`` and ``n_iter_=0``.
        """
        self._online = online
        self.n_components = online.n_components
        self.n_features_in_ = online.stats.n_features
        for name, value in (("converged_", False), ("n_iter_", 0), ("lower_bound_", -np.inf),
                            ("lower_bounds_", [])):
            if not hasattr(self, name):
                setattr(self, name, value)
        self._publish(online.params)
        return self

    def _publish(self, params: GaussianParams) -> None:
        """Make ``params`` the fitted attributes, in the dtype of the data the model was fitted on.

        The parameters themselves (``_params_``) and the statistics stay float64. For NumPy input
        all the arithmetic does too: float32 data are read chunk by chunk into the kernels' float64
        buffers, so float32 input halves the memory the E-step streams through without rounding
        the statistics to float32 (whose sums over many rows, at an offset of 1e4, would keep only
        about 3 digits). On a device (array API dispatch) the log-densities and responsibilities
        are computed in the input's dtype and the statistics accumulated in float64 where the
        device has it (:mod:`online_gmm._xp_scorer`).
        """
        self._params_ = params
        cast = self._cast
        self.weights_ = cast(params.weights)
        self.means_ = cast(params.means)
        self.covariances_ = cast(params.covariance_matrices())   # derived if given as precisions
        self.precisions_cholesky_ = cast(params.precisions_cholesky)

    def _cast(self, a: np.ndarray):
        """``a`` (float64) in the dtype of the data the model was fitted on, and in its array
        namespace and on its device under array API dispatch."""
        dtype = self.__dict__.get("_out_dtype", np.float64)
        if dtype != np.float64:
            a = a.astype(dtype)
        space = self.__dict__.get("_space")
        return a if space is None else to_space(a, space)

    @property
    def precisions_(self) -> np.ndarray:
        """Precision matrices (shape as ``covariances_``), derived from ``precisions_cholesky_``
        when first read: ``partial_fit`` publishes new parameters on every call, and most callers
        never read this."""
        if not hasattr(self, "_params_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute 'precisions_'")
        return self._cast(self._params_.precisions())

    def __getattr__(self, name: str) -> Any:
        # Reached only when ordinary lookup fails. While ``partial_fit`` is still warming up, the
        # fitted attributes are those of the buffer's provisional fit (OnlineEM.provisional), made
        # here when one is first read after new data: a short stream has a model as soon as
        # ``n_components`` rows were seen, and a stream that never asks pays nothing.
        if name in _PROVISIONAL_NAMES:
            online = self.__dict__.get("_online")
            if online is not None and not online.initialised:
                fitted = online.provisional()
                if fitted is not None:
                    self._publish(fitted[1])
                    return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "_params_")

    def _check_fitted(self) -> None:
        if not hasattr(self, "_params_") and hasattr(self, "_online"):
            from sklearn.exceptions import NotFittedError
            seen = self._online.n_seen
            why = (f"a provisional model needs at least n_components={self.n_components}"
                   if seen < self.n_components else
                   "the rows buffered so far could not be fitted (ill-defined covariances)")
            raise NotFittedError(
                f"This {type(self).__name__} is still warming up and has seen {seen} rows: {why} "
                f"(the warm-up buffers {self._online.warm_up} samples before its first update). "
                "Call partial_fit with more data, or fit.")
        check_is_fitted(self)

    @property
    def stats_(self) -> SufficientStatistics:
        """The statistics the parameters are the M-step of (while warming up: the buffer's, not
        yet counted by the step-size schedule)."""
        self._check_fitted()
        online = self._online
        if not online.initialised:
            return online.provisional()[0]
        return online.stats

    @property
    def n_samples_seen_(self) -> int:
        if not hasattr(self, "_online"):
            raise AttributeError("n_samples_seen_")
        return self._online.n_seen

    @property
    def reseeds_(self) -> list:
        return list(self._online.reseeds) if hasattr(self, "_online") else []

    def _scorer(self):
        self._check_fitted()
        online = self._online
        if online.params is not self._params_:
            from online_gmm._em import Scorer
            return Scorer(self._params_)
        return online.scorer()

    def _device_scorer(self, params: GaussianParams | None = None):
        """An :class:`~online_gmm._xp_scorer.XpScorer` of ``params`` (default: the fitted ones) on
        the namespace and device the model was fitted with, cached until the parameters change
        (their constants are sent to the device once)."""
        if params is None:
            self._check_fitted()
            params = self._params_
        cached = self.__dict__.get("_xp_scorer")
        if cached is None or cached.params is not params:
            from online_gmm._xp_scorer import XpScorer
            cached = XpScorer(params, self.__dict__["_space"])
            self._xp_scorer = cached
        return cached
