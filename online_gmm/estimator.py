"""``OnlineGaussianMixture``: scikit-learn's ``GaussianMixture`` API, plus ``partial_fit``.

This module holds the estimator's parameters, the validation of its input, and fitting (``fit``,
``partial_fit``, ``merge``, ``from_statistics``); the fitted attributes and state are in
:mod:`online_gmm._estimator_fitted`, inference (scores, predictions, BIC/AIC, sampling) in
:mod:`online_gmm._estimator_inference`, both inherited by the estimator.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import validate_data

from online_gmm._array_api import (
    DISPATCH_INITS,
    Space,
    all_within,
    check_same_space,
    dispatch_enabled,
    float_dtypes,
    numpy_dtype,
    space_of,
    space_of_array,
    to_numpy,
    to_space,
)
from online_gmm._batch import fit_em
from online_gmm._em import GaussianParams
from online_gmm._estimator_fitted import _PROVISIONAL_NAMES, _FittedStateMixin
from online_gmm._estimator_inference import _InferenceMixin
from online_gmm._guards import _MAX_ABS64, MAX_ABS
from online_gmm._init import check_inits
from online_gmm._online import RefusedRecordsError, screen_extreme
from online_gmm._sklearn_support import (
    VerbosePrinter,
    rows_message,
    sklearn_constraint,
    validate_weight,
)
from online_gmm._suffstats import SufficientStatistics
from online_gmm.model_spec import DEFAULTS as _D
from online_gmm.model_spec import PARAMETERS, OnlineModelParams, check_random_state

__all__ = ["OnlineGaussianMixture"]

#: input dtypes kept (the fitted attributes and the per-sample outputs take the input's)
_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))

class OnlineGaussianMixture(_FittedStateMixin, _InferenceMixin, DensityMixin, BaseEstimator,
                            OnlineModelParams):
    """Gaussian mixture fitted by batch EM (``fit``) or stepwise online EM (``partial_fit``).

    ``fit`` is scikit-learn's :class:`~sklearn.mixture.GaussianMixture` EM: from the same starting
    parameters it reaches the same parameters, ``n_iter_`` and ``lower_bound_``. ``partial_fit`` is one
    stepwise EM update per call: the batch's responsibility-weighted statistics (weight, centred mean,
    scatter per component) are blended into running statistics with a step-size schedule, and the
    parameters are their M-step. Memory is constant in the length of the stream.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
    tol : float, default=1e-3
        EM stops when the lower bound (mean log-likelihood) changes by less than this.
    reg_covar : float, default=1e-6
        Added to the diagonal of every covariance.
    max_iter : int, default=100
        EM iterations per start in ``fit`` and in the warm-up.
    n_init : int, default=1
        Starts in ``fit``; the best lower bound wins.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}, default='kmeans'
    weights_init : array-like of shape (n_components,), default=None
    means_init : array-like of shape (n_components, n_features), default=None
    precisions_init : array-like, default=None
        Shape (K,) spherical, (K, D) diag, (D, D) tied, (K, D, D) full.
    random_state : int, RandomState instance or None, default=None
    warm_start : bool, default=False
        ``fit`` starts from the previous solution.
    verbose : int, default=0
    verbose_interval : int, default=10
    alpha : float in [0.5, 1], default=1.0
        Decay exponent of the online step size ``gamma(t) = (t / step_unit + t0) ** -alpha``
        (per unit of sample weight; see :class:`~online_gmm._schedule.StepSchedule`). ``alpha=1`` with
        ``t0=0`` is the exact running average, for any batch sizes. The default 1.0 (no forgetting
        beyond ``t0``) gave the best one-pass held-out likelihood on stationary streams in
        ``benchmarks/tune_online_defaults.py`` (alpha 0.6-1.0; smaller alpha remembers fewer samples:
        0.6 lost 0.004 nats/point at N=1e6, D=16 and 0.28 at N=1e5, D=50); use ``halflife`` or a
        smaller alpha for drifting streams.
    t0 : float, default=2.0
        Offset of the schedule, in units of ``step_unit`` samples (with ``alpha=1``, the warm-up
        statistics count ``t0 * step_unit`` samples more than their weight in the shares).
    step_unit : float, default=1000.0
        Samples per schedule step: the schedule does not depend on how the stream is cut into batches.
    halflife : float or None, default=None
        If set, forget old data at a constant rate: a sample's weight halves every ``halflife``
        samples (for drifting streams).
    warm_up : int or 'auto', default='auto'
        Sample weight buffered by ``partial_fit`` before the first M-step; the buffer is fitted by
        batch EM with ``warm_up_n_init`` starts. 'auto' is ``max(2000, 40 * n_components * n_features)``
        (at half that, 1 seed in 6 of benchmarks/tune_online_defaults.py stayed in a merged-component
        optimum, -0.13 nats/point). A short stream is not left without a model: as soon as
        ``n_components`` rows were seen, reading a fitted attribute or predicting fits the buffer so
        far (provisional parameters, refined as more rows arrive; see
        :meth:`OnlineEM.provisional <online_gmm._online.OnlineEM.provisional>`), without changing
        how the warm-up ends.
    warm_up_n_init : int, default=3
        Batch-EM starts on the warm-up buffer. Stepwise EM rarely leaves the warm-up's local
        optimum, so one start often costs 0.1-0.25 nats/point; three are the default. The starts
        are compared after short runs of 3 EM iterations and only the best continues to
        convergence (the "emEM" strategy of Biernacki, Celeux and Govaert, 2003): on the data of
        ``benchmarks/bench_core.py`` (7 seeds) this chose the same start as full runs in 35-55%
        less warm-up time.
    min_weight : float, default=1e-3 / n_components when None
        In ``partial_fit``, a component whose weight falls below this is re-seeded at the worst
        explained points of the batch (recorded in ``reseeds_``, with a ``ComponentReseededWarning``).

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
    precisions_ : ndarray
    precisions_cholesky_ : ndarray
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
    lower_bounds_ : list of float
    n_features_in_ : int
    n_samples_seen_ : int
        Records learned by ``fit`` and ``partial_fit`` since the last reset.
    stats_ : SufficientStatistics
        The statistics the parameters are the M-step of.
    reseeds_ : list of (n_samples_seen, component)

    Examples
    --------
    >>> import numpy as np
    >>> from online_gmm import OnlineGaussianMixture
    >>> rng = np.random.RandomState(0)
    >>> X = np.vstack([rng.normal(-5, 1, (500, 2)), rng.normal(5, 1, (500, 2))])
    >>> gm = OnlineGaussianMixture(n_components=2, random_state=0).fit(X)
    >>> np.round(np.sort(gm.means_[:, 0]))
    array([-5.,  5.])
    >>> online = OnlineGaussianMixture(n_components=2, warm_up=200, random_state=0)
    >>> for batch in np.array_split(rng.permutation(X), 10):
    ...     online = online.partial_fit(batch)
    >>> online.n_samples_seen_
    1000
    >>> np.round(np.sort(online.means_[:, 0]))
    array([-5.,  5.])
    """

    #: from :data:`online_gmm.model_spec.PARAMETERS` (also checked there without scikit-learn)
    _parameter_constraints: dict = {name: [sklearn_constraint(c) for c in constraints]
                                    for name, (_, constraints) in PARAMETERS.items()}

    def __init__(self, n_components: int = _D["n_components"], *,
                 covariance_type: str = _D["covariance_type"], tol: float = _D["tol"],
                 reg_covar: float = _D["reg_covar"], max_iter: int = _D["max_iter"],
                 n_init: int = _D["n_init"], init_params: str = _D["init_params"],
                 weights_init=_D["weights_init"], means_init=_D["means_init"],
                 precisions_init=_D["precisions_init"], random_state=_D["random_state"],
                 warm_start: bool = _D["warm_start"], verbose: int = _D["verbose"],
                 verbose_interval: int = _D["verbose_interval"], alpha: float = _D["alpha"],
                 t0: float = _D["t0"], step_unit: float = _D["step_unit"],
                 halflife: float | None = _D["halflife"], warm_up: int | str = _D["warm_up"],
                 warm_up_n_init: int = _D["warm_up_n_init"],
                 min_weight: float | None = _D["min_weight"]) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.alpha = alpha
        self.t0 = t0
        self.step_unit = step_unit
        self.halflife = halflife
        self.warm_up = warm_up
        self.warm_up_n_init = warm_up_n_init
        self.min_weight = min_weight

    # ================================================================== validation helpers
    def _validate_X(self, X, *, reset: bool, min_samples: int = 1) -> np.ndarray:
        return self._check_X(X, reset, min_samples)[0]

    def _check_X(self, X, reset: bool, min_samples: int) -> tuple[np.ndarray, bool]:
        """The validated array, and whether every value is known to lie within +-MAX_ABS (then
        OnlineEM's screen has nothing to refuse and is skipped)."""
        if (not reset and type(X) is np.ndarray and X.dtype in _FLOATS and X.ndim == 2
                and X.flags.c_contiguous and X.shape[0] >= min_samples
                and not hasattr(self, "feature_names_in_") and hasattr(self, "n_features_in_")):
            # fast path for the streaming case (a plain float array on every call): the same checks
            # and messages as validate_data, without its ~150 us of generic dispatch per call
            if X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input.")
            # every |x| <= MAX_ABS (false with NaN or inf): finite too, in two reductions, as cheap
            # as the finiteness check
            if X.max() <= _MAX_ABS64 and X.min() >= -_MAX_ABS64:     # float32 compared in float64
                return X, True
            if not np.isfinite(X).all():
                if np.isnan(X).any():
                    raise ValueError(f"Input X contains NaN.\n{type(self).__name__} does not accept "
                                     "missing values encoded as NaN natively.")
                raise ValueError(f"Input X contains infinity or a value too large for {X.dtype!r}.")
            return X, False
        # float32 stays float32, as in scikit-learn (anything else becomes float64)
        return validate_data(self, X, reset=reset, dtype=[np.float64, np.float32],
                             ensure_min_samples=min_samples, order="C"), False

    def _validate_on_device(self, X, space: Space, *, reset: bool, min_samples: int = 1):
        """``X`` validated in its own namespace and on its device (array API dispatch): the checks
        and messages of ``validate_data`` (finiteness reduced on the device), float32 kept."""
        return validate_data(self, X, reset=reset, dtype=float_dtypes(space),
                             ensure_min_samples=min_samples)

    def _screen(self, X, space: Space | None, method: str) -> None:
        """Raise ValueError naming the rows of ``X`` with a value beyond +-MAX_ABS; on a device
        the check is one reduction there, and only a failing batch comes to the host for the
        message."""
        if space is not None:
            if all_within(X, space, MAX_ABS):
                return
            X = to_numpy(X)
        _, refused = screen_extreme(X, np.arange(X.shape[0], dtype=np.int64))
        if refused:
            raise ValueError(rows_message(method, refused, 0))

    def _input_space(self, X) -> Space | None:
        """The namespace and device of the data of a (first) fit under array API dispatch.

        Raises NotImplementedError for the k-means starts under dispatch, as scikit-learn does.
        """
        if dispatch_enabled() and self.init_params not in DISPATCH_INITS:
            raise NotImplementedError(
                f"Allowed `init_params` are {DISPATCH_INITS} if 'array_api_dispatch' is enabled; "
                f"got init_params={self.init_params!r} (its k-means has no array API support).")
        return space_of(X)

    def _inits(self, n_features: int):
        # starting parameters given as arrays of another namespace (under dispatch) come to NumPy
        return check_inits(to_numpy(self.weights_init), to_numpy(self.means_init),
                           to_numpy(self.precisions_init), n_components=self.n_components,
                           n_features=n_features, covariance_type=self.covariance_type)

    def _host(self, X, method: str):
        """``X`` validated as a NumPy array for an inference ``method``; under array API dispatch,
        checked to be in the fitted model's namespace and on its device first."""
        self._check_fitted()
        if type(X) is not np.ndarray or self.__dict__.get("_space") is not None:
            check_same_space(X, self, method)
            X = to_numpy(X)
        return self._validate_X(X, reset=False)

    _validate_weight = staticmethod(validate_weight)

    # ================================================================== fitting
    def fit(self, X, y=None, sample_weight=None) -> "OnlineGaussianMixture":
        """Estimate the parameters with full-batch EM (``n_init`` starts, the best one kept).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sample; ``sample_weight=2`` is the same as the row appearing twice.

        Returns
        -------
        self
        """
        self._fit(X, sample_weight)
        return self

    def fit_predict(self, X, y=None, sample_weight=None) -> np.ndarray:
        """Fit with batch EM, then return the label of each sample, shape (n_samples,)."""
        X = self._fit(X, sample_weight)
        if not isinstance(X, np.ndarray):                    # fitted on a device: predicted there
            return self._device_scorer().predict(X)
        return to_space(self._scorer().predict(X), self.__dict__.get("_space"))

    def _fit(self, X, sample_weight):
        """Fit; returns ``X`` validated (a NumPy array, or under array API dispatch an array of
        the input's namespace, left on its device: the E-steps run there)."""
        self._validate_params()
        space = self._input_space(X)
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        if not do_init and self.__dict__.get("_space") is None:
            space = None                     # a warm start of a model fitted on NumPy stays there
        if space is None:
            X = self._validate_X(to_numpy(X), reset=do_init, min_samples=2)
            out_dtype = X.dtype
        else:
            X = self._validate_on_device(X, space, reset=do_init, min_samples=2)
            out_dtype = numpy_dtype(X.dtype, space)
        if do_init:
            self._out_dtype = out_dtype
            self._space = space
        n, d = X.shape
        if n < self.n_components:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                f"n_samples = {n}")
        w = self._validate_weight(to_numpy(sample_weight), n)
        self._screen(X, space, "fit")
        weights_init, means_init, precisions_init = self._inits(d)
        rng = check_random_state(self.random_state)

        printer = VerbosePrinter(self.verbose, self.verbose_interval) if self.verbose else None
        start = self._params_ if not do_init else None
        kwargs = dict(n_components=self.n_components, covariance_type=self.covariance_type,
                      init_params=self.init_params, n_init=self.n_init, rng=rng,
                      reg_covar=self.reg_covar, tol=self.tol, max_iter=self.max_iter,
                      sample_weight=w, weights_init=weights_init, means_init=means_init,
                      precisions_init=precisions_init, start=start,
                      start_lower_bound=self.lower_bound_ if start is not None else -np.inf,
                      on_iter=printer.iteration if printer else None,
                      on_init=printer.init if printer else None)
        if space is None:
            result = fit_em(X, **kwargs)
        else:
            from online_gmm._xp_fit import fit_em_xp
            result = fit_em_xp(X, space, **kwargs)
        if not result.converged and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init parameters, "
                "or increase max_iter, tol, or check for degenerate data.", ConvergenceWarning)
        stats = result.stats
        if stats is None:
            if space is None:
                from online_gmm._em import Scorer
                stats, _ = Scorer(result.params).expected_statistics(X, w)
            else:
                from online_gmm._xp_scorer import XpScorer, put, stats_dtype
                stats, _ = XpScorer(result.params, space).expected_statistics(
                    X, None if w is None else put(w, space, stats_dtype(space)))
        total = float(n if w is None else w.sum())
        self._install(stats, result.params, t=total, n_seen=n, weight_seen=total, rng=rng, result=result)
        return X

    def _install(self, stats: SufficientStatistics, params: GaussianParams, *, t: float, n_seen: int,
                 weight_seen: float, rng: np.random.RandomState, result=None) -> None:
        """Make ``stats`` (and ``params``, their M-step) this model's fitted state.

        ``result`` (an EMResult) supplies ``converged_``, ``n_iter_`` and the lower bounds of a batch
        fit; without it the model is fitted but not by EM (a merge, loaded statistics).
        """
        online = self._new_online(stats.n_features, rng)
        online.set_state(stats, params, t)
        online.n_seen = n_seen
        online.weight_seen = weight_seen
        self._online = online
        self.converged_ = bool(result.converged) if result is not None else False
        self.n_iter_ = int(result.n_iter) if result is not None else 0
        self.lower_bound_ = float(result.lower_bound) if result is not None else -np.inf
        self.lower_bounds_ = list(result.lower_bounds) if result is not None else []
        self._publish(params)

    def partial_fit(self, X, y=None, sample_weight=None) -> "OnlineGaussianMixture":
        """One stepwise EM update from a batch (the first ``warm_up`` samples are buffered first).

        A batch with a row that cannot be learned (a value beyond 1e150 in magnitude, or a row that
        would make the update or the warm-up fit ill-defined) raises a ValueError naming the rows
        and why, and the model is left unchanged: drop those rows and call again. When the culprits
        of a failed warm-up fit are only rows of earlier calls, they are dropped from the warm-up
        buffer with a UserWarning naming them (by record number, counting the records learned from
        the first call on), and the warm-up completes without them.

        While the warm-up lasts, the model is the buffer's provisional fit, made when a fitted
        attribute is first read or a prediction asked for after new rows (at least
        ``n_components`` of them in all); see ``warm_up``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Any number of rows, one included.
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self
        """
        first = not hasattr(self, "_online")
        space = None
        if first:
            self._validate_params()
            space = self._input_space(X)
        if type(X) is not np.ndarray:
            if not first and self.__dict__.get("_space") is not None:
                check_same_space(X, self, "partial_fit")
                if (dispatch_enabled() and self._online.initialised
                        and self._partial_fit_on_device(X, sample_weight)):
                    return self
            X, sample_weight = to_numpy(X), to_numpy(sample_weight)
        X, within = self._check_X(X, first, 1)
        if first:
            self._out_dtype = X.dtype
            self._space = space
        w = self._validate_weight(sample_weight, X.shape[0])
        online = self._online if not first else self._new_online(
            X.shape[1], check_random_state(self.random_state))
        # ids: record numbers while warming up (a failed warm-up fit may name rows of earlier
        # calls), row indices after it (formed only if a row is refused)
        base = 0 if online.initialised else online.n_seen
        ids = None if online.initialised else base + np.arange(X.shape[0], dtype=np.int64)
        try:
            dropped = online.update(X, w, ids=ids, screened=within)
        except RefusedRecordsError as err:
            raise ValueError(rows_message("partial_fit", err.refused, base)) from None
        if dropped:
            warnings.warn(rows_message("partial_fit", dropped, base, dropped=True), UserWarning,
                          stacklevel=2)
        if first:
            self._online = online
            self.converged_ = False
            self.n_iter_ = 0
            self.lower_bound_ = -np.inf
            self.lower_bounds_ = []
        if self._online.initialised:
            self._publish(self._online.params)
        else:
            # still warming up: the fitted attributes are the buffer's provisional fit, made when
            # first read (``__getattr__``); drop those of a smaller buffer
            for name in _PROVISIONAL_NAMES:
                self.__dict__.pop(name, None)
        return self

    def _partial_fit_on_device(self, X, sample_weight) -> bool:
        """One stepwise update after the warm-up, with the E-step on the data's device: only the
        batch's statistics come to the host, where the stepwise M-step runs.

        Returns False, the state unchanged, where the host must see the rows (the caller then
        updates from a host copy, as for NumPy input): a value beyond +-MAX_ABS, or an ill-defined
        update (the host finds and names the rows to refuse). Invalid input (NaN, infinity, the
        wrong number of features) raises ValueError here.
        """
        from online_gmm._xp_scorer import put, stats_dtype

        space = self._space
        X = self._validate_on_device(X, space, reset=False)
        w = self._validate_weight(to_numpy(sample_weight), X.shape[0])
        if not all_within(X, space, MAX_ABS):
            return False
        online = self._online
        batch = self._device_scorer(online.params).expected_statistics(
            X, None if w is None else put(w, space, stats_dtype(space)))
        try:
            # a collapsed component is re-seeded at the batch's worst explained rows: then (only)
            # the batch comes to the host
            online.step(X, w, batch=batch, candidates=lambda: to_numpy(X))
        except ValueError:
            return False
        self._publish(online.params)
        return True

    # ================================================================== pickling, tags
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if "_xp_scorer" in state:         # device arrays and a namespace: rebuilt on demand
            state = {k: v for k, v in state.items() if k != "_xp_scorer"}
        if state.get("_space") is not None:
            # a namespace is a module, which does not pickle: found again from means_ on load
            state = dict(state, _space=True)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if self.__dict__.get("_space") is True:
            self._space = space_of_array(self.__dict__.get("means_"))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.array_api_support = True      # see online_gmm._array_api
        return tags

    # ================================================================== map-reduce
    def merge(self, other: "OnlineGaussianMixture") -> "OnlineGaussianMixture":
        """A new model whose statistics are the sum of both models' (Chan's merge), and its M-step.

        Both models must have the same hyper-parameters shape (components, features, covariance type).
        For map-reduce: fit each shard's statistics under shared parameters, merge, and the M-step of
        the merged statistics is one EM step over all the data.
        """
        self._check_fitted()
        other._check_fitted()
        if other.n_features_in_ != self.n_features_in_:
            raise ValueError(
                f"cannot merge a model with {other.n_features_in_} features into one with "
                f"{self.n_features_in_}")
        stats = self.stats_ + other.stats_
        return self._from_state(stats, t=self._online.t + other._online.t,
                                n_seen=self._online.n_seen + other._online.n_seen,
                                weight_seen=self._online.weight_seen + other._online.weight_seen)

    def _from_state(self, stats: SufficientStatistics, *, t: float, n_seen: int,
                    weight_seen: float) -> "OnlineGaussianMixture":
        from sklearn.base import clone
        new = clone(self)
        new._out_dtype = self.__dict__.get("_out_dtype", np.float64)
        new._space = self.__dict__.get("_space")
        new.n_features_in_ = stats.n_features
        if hasattr(self, "feature_names_in_"):
            new.feature_names_in_ = self.feature_names_in_
        new._install(stats, stats.to_params(self.reg_covar), t=t, n_seen=n_seen,
                     weight_seen=weight_seen, rng=check_random_state(self.random_state))
        return new

    @classmethod
    def from_statistics(cls, stats: SufficientStatistics, **params: Any) -> "OnlineGaussianMixture":
        """A fitted model whose parameters are the M-step of ``stats``."""
        params.setdefault("n_components", stats.n_components)
        params.setdefault("covariance_type", stats.covariance_type)
        if params["n_components"] != stats.n_components or params["covariance_type"] != stats.covariance_type:
            raise ValueError("n_components and covariance_type must match the statistics")
        model = cls(**params)
        model._validate_params()
        total = stats.total_weight
        return model._from_state(stats.copy(), t=total, n_seen=int(round(total)), weight_seen=total)
