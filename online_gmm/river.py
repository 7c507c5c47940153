"""River learners over the online EM core: :class:`OnlineGMM` (a clusterer) and
:class:`GMMAnomalyDetector` (an anomaly detector).

Both hold the same :class:`~online_gmm._online.OnlineEM` state as
:class:`~online_gmm.estimator.OnlineGaussianMixture` and evaluate it with the same kernels; nothing
here is a second E-step or M-step.

Features as dicts
-----------------
The feature set and its order (sorted when the names are mutually comparable, otherwise the order of
first appearance) are fixed by the first record learned: its keys with finite numeric values.
Afterwards:

* a feature of the schema that is absent, ``None``, NaN or infinite in a record is *missing*: the
  record is scored and assigned with the mixture's exact marginal over its observed features
  (sub-vector of each mean, sub-block of each covariance). A record with no observed feature has
  log-likelihood 0 (score 0.0) and the mixing weights as responsibilities. Scores of records with
  different observed features are not on the same scale (fewer dimensions, fewer nats);
* a record with a missing feature is learned, after the warm-up fit, through its conditional
  expectations (see "Learning from incomplete records" below); during the warm-up, with
  ``learn_incomplete=False``, or when no feature of the schema is observed, it is skipped.
  ``n_incomplete_`` counts the records with a missing feature, ``n_incomplete_learned_`` and
  ``n_incomplete_skipped_`` split them (their sum is ``n_incomplete_``);
* a feature outside the schema (one never seen in the first record) is ignored, for learning and
  for prediction alike;
* a record the model cannot learn, one with a value beyond 1e150 in magnitude or one that would
  make an update (or the warm-up fit) ill-defined, is skipped when its batch is applied and counted
  in ``n_refused_`` (it stays counted in ``n_learned_``, which sets the update boundaries):
  ``learn_one`` never raises for a finite record. Scores decrease with the distance up to the
  largest floats (``nll_one`` is ``inf`` where the density underflows, never NaN; the detector's
  calibrated ``score_one`` is then 1.0), and such a record's responsibilities go to the component nearest it in Mahalanobis distance.

Learning in batches
-------------------
``learn_one`` copies the record into a preallocated ``(update_every, n_features)`` buffer. When the
buffer is full, one stepwise EM update (:meth:`OnlineEM.step <online_gmm._online.OnlineEM.step>`:
E-step of the buffered rows under the current parameters, blend, M-step) is applied, so the M-step
is paid once per ``update_every`` records. ``learn_many`` fills the same buffer at the same
boundaries, so a DataFrame learned at once and the same records learned one by one give the same
model (incomplete records included). The first ``warm_up`` complete records (rounded up to a
multiple of ``update_every``) are fitted by batch EM with ``warm_up_n_init`` starts.

**When learning becomes visible:** predictions and scores use the parameters of the last update.
A record learned by ``learn_one`` affects them once the number of records learned (``n_learned_``:
complete ones and incomplete ones learned) reaches the next multiple of ``update_every`` (and the
warm-up is over); :meth:`flush` applies a partial buffer at once.

The learner holds the warm-up records itself and hands them to the core in one batch when the
warm-up is complete.

Learning from incomplete records
--------------------------------
After the warm-up fit, a record with some features missing goes into the same buffer as complete
records (NaN where missing) and is learned in the same update, with the exact E-step for data
missing at random (Ghahramani & Jordan, 1994, "Supervised learning from incomplete data via an EM
approach"; :func:`~online_gmm._marginal.incomplete_statistics`): its responsibilities come from the
marginal over its observed features, its missing block is replaced, per component, by the
conditional mean ``mu_m + S_mo S_oo^-1 (x_o - mu_o)``, and the conditional covariance
``S_mm - S_mo S_oo^-1 S_om`` is added to the component's scatter (for 'diag' and 'spherical' the
conditional mean is ``mu_m`` and the covariance the component's variances there). These expected
statistics are merged (Chan) with the complete rows' statistics under the same parameters and
applied in ONE stepwise update, in which the incomplete records count in the schedule's clock
like complete ones; only complete rows are candidates for re-seeding a collapsed component. With
``standardize``, an incomplete record is standardised on its observed features. Nothing is
imputed for prediction: the learned statistics are expectations, not values.

During the warm-up, incomplete records are skipped and counted (``n_incomplete_skipped_``): the
warm-up batch EM and the frozen ``standardize`` scale are computed from complete rows. A record with
no observed feature of the schema has nothing to learn from and is skipped too.
``learn_incomplete=False`` restores the former policy: every incomplete record is skipped (counted).

Before the warm-up is over, ``predict_one`` returns cluster 0, ``predict_proba_one`` the uniform
distribution over the components and ``score_one`` 0.0 (:class:`GMMAnomalyDetector`: the score of a
provisional diagonal Gaussian of the records learned so far).

Standardising inside the learner
--------------------------------
With ``standardize=True`` the mixture is fitted to ``z = (x - shift_) / scale_``, where ``shift_`` and
``scale_`` are the mean and standard deviation of each feature over the warm-up records, frozen when
the warm-up fit is made (a feature that was constant during the warm-up, which has no scale of its
own, gets the mean standard deviation of the other features; 1.0 if every feature was constant).
``reg_covar`` is then relative: a floor of ``reg_covar`` times each feature's warm-up variance.
Scores stay the negative log-density of the record *in its own units*:
``-log p(x) = -log p_z(z) + sum_j log scale_j`` (over the observed features), so scores before and
after the warm-up fit are on one scale, and rescaling a feature shifts every score by the same
constant. Unlike a running ``preprocessing.StandardScaler`` in front of the learner, the scale does
not move under the model: the warm-up fit and every later update see the same transform.
``params_`` are in standardised units.
"""

from __future__ import annotations

import bisect
import copy
import math
import numbers
from typing import Any, Hashable

import numpy as np
from river import base
from scipy.linalg import solve_triangular

from online_gmm._batch import BatchInit
from online_gmm._em import _FAR, GaussianParams, Scorer
from online_gmm._gaussian import KERNELS
from online_gmm._init import INIT_METHODS
from online_gmm._marginal import MarginalCache, RowScorer, incomplete_statistics
from online_gmm._online import OnlineEM, screen_extreme
from online_gmm._schedule import StepSchedule
from online_gmm._suffstats import SufficientStatistics

__all__ = ["OnlineGMM", "GMMAnomalyDetector", "negative_log_likelihood"]


def _overflowed(how: tuple) -> tuple[np.ndarray, float, np.ndarray]:
    """A record of ``_wlp_one`` (``how``: its evaluator and values) through the core's overflow-safe
    path: (weighted log-probabilities, log p, responsibilities). Called only when the one-row
    result is not finite (a Mahalanobis distance overflowed), so a clean record pays nothing."""
    evaluator, z = how[0], how[1]
    return evaluator.overflow_safe(z)


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _check_real(name: str, value: Any, low: float, high: float = math.inf, *,
                low_open: bool = False) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" + ("" if high == math.inf else f" and <= {high}")
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def _feature_scale(stats: SufficientStatistics) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale of each feature from one-component diagonal statistics.

    The scale is the standard deviation; a feature that is constant (its standard deviation at most
    1e-8 of its mean's magnitude, i.e. zero up to rounding) has no scale of its own and gets the mean
    standard deviation of the other features, or 1.0 if every feature is constant.

    Parameters
    ----------
    stats : SufficientStatistics
        'diag' statistics of one component with a positive weight.

    Returns
    -------
    shift, scale : ndarray of shape (n_features,)
    """
    shift = stats.means[0].copy()
    sd = np.sqrt(stats.scatter[0] / stats.weights[0])
    constant = sd <= 1e-8 * np.abs(shift)
    if constant.all():
        return shift, np.ones_like(sd)
    if constant.any():
        sd[constant] = sd[~constant].mean()
    return shift, sd


# ---------------------------------------------------------------------------------- score calibration
# GMMAnomalyDetector.score_one is F(s), s = -log p(x): the probability under the current mixture that
# a random record is at least as likely as x, P(log p(Y) >= log p(x)) = P(S <= s) with S = -log p(Y),
# estimated from _N_CALIBRATION fixed draws pushed through the current parameters (see the class
# docstring for the interpolation and the two tails).

#: records sampled from the model to calibrate its scores (resolution 1/(M+1) in the body)
_N_CALIBRATION = 1000
#: observed patterns whose calibration a parameter set keeps (as MarginalCache)
_N_PATTERNS = 8
#: the calibration sample is redrawn at an update when at least this many records were learned
#: since the last redraw (every second update with the default update_every=128)
_CAL_EVERY = 256


def _cholesky_full(U: np.ndarray, comp: int, E: np.ndarray) -> np.ndarray:
    return solve_triangular(U[comp], E.T, trans="T", lower=False, check_finite=False).T


def _cholesky_tied(U: np.ndarray, comp: int, E: np.ndarray) -> np.ndarray:
    return solve_triangular(U, E.T, trans="T", lower=False, check_finite=False).T


def _cholesky_diag(U: np.ndarray, comp: int, E: np.ndarray) -> np.ndarray:
    return E / U[comp]


#: per covariance type: standard normal rows E -> rows with covariance (U U^T)^-1, where U is the
#: precision Cholesky factor of component ``comp`` (a triangular solve, no inverse)
_COLOUR = {"full": _cholesky_full, "tied": _cholesky_tied, "diag": _cholesky_diag,
           "spherical": _cholesky_diag}


def _mixture_sample(params: GaussianParams, u0: float, E: np.ndarray) -> np.ndarray:
    """A sample of the mixture, shape (M, D), from fixed draws: component counts by systematic
    sampling (positions ``(i + u0) / M`` against the cumulative weights: each component gets
    ``M w_k`` rows, give or take one) and the standard normal rows ``E`` coloured by the
    component's covariance. The same draws and parameters give the same sample."""
    m = E.shape[0]
    cum = np.cumsum(params.weights)
    # positions increase, so each component's rows are one contiguous block
    ends = np.searchsorted((np.arange(m) + u0) / m, cum / cum[-1], side="left")
    ends[-1] = m
    X = np.empty_like(E)
    colour = _COLOUR[params.covariance_type]
    start = 0
    for k, end in enumerate(ends.tolist()):
        if end > start:
            X[start:end] = params.means[k] + colour(params.precisions_cholesky, k, E[start:end])
            start = end
    return X


def _cdf_one(q: list[float], s: float) -> float:
    """The calibrated score of the NLL ``s`` against the sorted sample NLLs ``q`` (see
    :class:`GMMAnomalyDetector`): strictly increasing in ``s``, in (0, 1), 1.0 only for
    excesses beyond about 1e13 nats (and for ``s = inf``)."""
    step = 1.0 / (len(q) + 1)
    if s <= q[0]:
        return step * math.exp(s - q[0])
    if s >= q[-1]:
        return 1.0 - step / (1.0 + (s - q[-1]))
    i = bisect.bisect_right(q, s)              # q[i-1] <= s < q[i]
    lo, hi = q[i - 1], q[i]
    return step * (i + (s - lo) / (hi - lo))


def _cdf_many(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """:func:`_cdf_one` of each NLL in ``s`` (equal to rounding)."""
    m = q.shape[0]
    step = 1.0 / (m + 1)
    out = np.interp(s, q, step * np.arange(1, m + 1))
    low, high = s <= q[0], s >= q[-1]
    out[low] = step * np.exp(s[low] - q[0])
    with np.errstate(invalid="ignore"):
        out[high] = 1.0 - step / (1.0 + (s[high] - q[-1]))
    return out


def negative_log_likelihood(model, x: dict) -> float:
    """-log p(x) of ``x`` under the :class:`GMMAnomalyDetector` at the end of ``model``.

    For thresholds in nats (:class:`online_gmm.anomaly.NLLFilter`). ``model`` is a detector or a
    ``compose.Pipeline`` ending in one (``x`` goes through the pipeline's transformers, as in
    ``Pipeline.score_one``); for any other detector, its ``score_one``.

    Parameters
    ----------
    model : river AnomalyDetector or compose.Pipeline
    x : dict

    Returns
    -------
    float

    Examples
    --------
    >>> from river import compose, preprocessing
    >>> from online_gmm.river import GMMAnomalyDetector, negative_log_likelihood
    >>> pipe = compose.Pipeline(preprocessing.StandardScaler(), GMMAnomalyDetector(warm_up=10))
    >>> for i in range(40):
    ...     pipe.learn_one({"a": float(i % 7)})
    >>> negative_log_likelihood(pipe, {"a": 3.0}) == pipe["GMMAnomalyDetector"].nll_one(
    ...     pipe["StandardScaler"].transform_one({"a": 3.0}))
    True
    """
    steps = getattr(model, "steps", None)
    if steps is not None:
        *head, model = list(steps.values())
        for step in head:
            x = step.transform_one(x)
    nll = getattr(model, "nll_one", None)
    return nll(x) if nll is not None else model.score_one(x)


class _View:
    """The evaluators of one parameter set and the transform into its units (standardize); for
    the provisional model (``provisional``), the calibration of its scores (``cal``: observed
    pattern -> (offset, sorted sample NLLs); see :meth:`GMMAnomalyDetector._calibration`)."""

    __slots__ = ("cal", "log_det", "log_scale", "marginals", "provisional", "row", "scale", "shift")

    def __init__(self, row: RowScorer, marginals: MarginalCache, shift: np.ndarray | None,
                 scale: np.ndarray | None, log_scale: np.ndarray | None,
                 provisional: bool = False) -> None:
        self.cal: dict[bytes, tuple[float, list[float]]] = {}
        self.provisional = provisional
        self.row = row
        self.marginals = marginals
        self.shift = shift
        self.scale = scale
        self.log_scale = log_scale
        self.log_det = 0.0 if log_scale is None else float(log_scale.sum())


class _DictGMM:
    """The state and methods shared by the River learners (see the module docstring)."""

    def __init__(self, n_components: int = 2, covariance_type: str = "full", update_every: int = 128,
                 warm_up: int | None = None, reg_covar: float = 1e-6, alpha: float = 1.0,
                 t0: float = 2.0, step_unit: float = 1000.0, halflife: float | None = None,
                 init_params: str = "kmeans", warm_up_n_init: int = 3, max_iter: int = 100,
                 tol: float = 1e-3, min_weight: float | None = None, standardize: bool = False,
                 seed: int | None = None, learn_incomplete: bool = True) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.update_every = update_every
        self.warm_up = warm_up
        self.reg_covar = reg_covar
        self.alpha = alpha
        self.t0 = t0
        self.step_unit = step_unit
        self.halflife = halflife
        self.init_params = init_params
        self.warm_up_n_init = warm_up_n_init
        self.max_iter = max_iter
        self.tol = tol
        self.min_weight = min_weight
        self.standardize = standardize
        self.seed = seed
        self.learn_incomplete = learn_incomplete
        self._validate()
        self._reset()

    def _validate(self) -> None:
        _check_int("n_components", self.n_components, 1)
        if self.covariance_type not in KERNELS:
            raise ValueError(f"covariance_type must be one of {sorted(KERNELS)}, "
                             f"got {self.covariance_type!r}")
        _check_int("update_every", self.update_every, 1)
        if self.warm_up is not None:
            _check_int("warm_up", self.warm_up, 1)
        _check_real("reg_covar", self.reg_covar, 0.0)
        _check_real("alpha", self.alpha, 0.5, 1.0)
        _check_real("t0", self.t0, 0.0)
        _check_real("step_unit", self.step_unit, 0.0, low_open=True)
        if self.halflife is not None:
            _check_real("halflife", self.halflife, 0.0, low_open=True)
        if self.init_params not in INIT_METHODS:
            raise ValueError(f"init_params must be one of {list(INIT_METHODS)}, got {self.init_params!r}")
        _check_int("warm_up_n_init", self.warm_up_n_init, 1)
        _check_int("max_iter", self.max_iter, 1)
        _check_real("tol", self.tol, 0.0)
        if self.min_weight is not None:
            _check_real("min_weight", self.min_weight, 0.0, 1.0)
        if type(self.standardize) not in (bool, np.bool_):
            raise ValueError(f"standardize must be True or False, got {self.standardize!r}")
        if self.seed is not None:
            _check_int("seed", self.seed, 0)
        if type(self.learn_incomplete) not in (bool, np.bool_):
            raise ValueError(f"learn_incomplete must be True or False, got {self.learn_incomplete!r}")

    def _reset(self) -> None:
        self._keys: list[Hashable] | None = None     # the schema, fixed by the first record learned
        self._online: OnlineEM | None = None
        self._buf: np.ndarray | None = None          # (update_every, D) records awaiting an update
        self._n_buf = 0
        self._n_buf_incomplete = 0                   # rows of the buffer with a missing feature (NaN)
        self._warm: list[np.ndarray] = []            # warm-up records, handed to the core at once
        self._n_warm = 0
        self._shift: np.ndarray | None = None        # standardize: frozen at the warm-up fit
        self._scale: np.ndarray | None = None
        self._log_scale: np.ndarray | None = None
        self._row: RowScorer | None = None           # one-row evaluator of the current parameters
        self._marginals: MarginalCache | None = None
        self._fitted: _View | None = None            # the two above and the transform (standardize)
        self._pre = None                             # provisional warm-up scorer (anomaly detector)
        #: records learned, buffered included: complete ones and incomplete ones learned
        self.n_learned_ = 0
        #: records with a feature of the schema missing, None, NaN or infinite (learned or skipped)
        self.n_incomplete_ = 0
        #: incomplete records learned through their conditional expectations
        self.n_incomplete_learned_ = 0
        #: incomplete records not learned (warm-up, learn_incomplete=False, nothing observed)
        self.n_incomplete_skipped_ = 0
        #: records kept out of the model although buffered (counted in ``n_learned_``): a value
        #: beyond 1e150 in magnitude, or a record that would make an update ill-defined
        self.n_refused_ = 0
        # GMMAnomalyDetector's score calibration: the seed of its fixed draws (set with the schema),
        # the draws (derived, regenerated from the seed) and the provisional model's sorted sample
        # half squared norms per observed pattern (derived)
        self._cal_seed: int | None = None
        self._cal_draws: tuple[float, np.ndarray] | None = None
        self._cal_base: dict[bytes, list[float]] = {}
        # the parameters the mixture's scores are calibrated with, n_learned_ when they were taken,
        # and their calibration (derived: sample, marginals, pattern -> sorted sample NLLs)
        self._cal_params: GaussianParams | None = None
        self._cal_n = 0
        self._cal: dict | None = None

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict:
        # Evaluators are derived state, rebuilt on load: they hold kernel functions, and the core's
        # cached Scorer does too (``Kernel`` holds lambdas, which pickle rejects).
        state = self.__dict__.copy()
        state["_row"] = state["_marginals"] = state["_fitted"] = None
        state["_pre"] = state["_cal_draws"] = state["_cal"] = None
        state["_cal_base"] = {}
        online = state.get("_online")
        if online is not None and online._scorer is not None:
            online = copy.copy(online)
            online._scorer = None
            state["_online"] = online
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        online = self._online
        if "_warm" not in state:  # pickled before ``standardize``: warm-up rows are in the core
            self.standardize = False
            self._warm, self._shift, self._scale, self._log_scale = [], None, None, None
            self._fitted = None
            self._n_warm = online.n_seen if online is not None and not online.initialised else 0
        if "n_incomplete_skipped_" not in state:  # pickled before incomplete records were learned
            self.learn_incomplete = False
            self.n_incomplete_learned_, self.n_incomplete_skipped_ = 0, self.n_incomplete_
            self._n_buf_incomplete = 0
        if "n_refused_" not in state:
            self.n_refused_ = 0
        if "_cal_seed" not in state:             # pickled before the calibrated scores
            self._cal_seed = None if self._keys is None else (self.seed or 0)
            self._cal_draws, self._cal_base, self._cal = None, {}, None
            self._cal_params = None if online is None or not online.initialised else online.params
            self._cal_n = self.n_learned_
        if online is not None and online.initialised:
            self._set_evaluators()

    # ------------------------------------------------------------------ schema and conversion
    @property
    def features_(self) -> list[Hashable] | None:
        """The schema: feature names in model order, or None before the first record is learned."""
        return None if self._keys is None else list(self._keys)

    @property
    def params_(self) -> GaussianParams | None:
        """The current mixture parameters (None until the warm-up is over)."""
        return None if self._online is None else self._online.params

    @property
    def online_(self) -> OnlineEM | None:
        """The :class:`~online_gmm._online.OnlineEM` state (shared with the other front ends)."""
        return self._online

    @property
    def n_pending_(self) -> int:
        """Records buffered and not yet applied (see :meth:`flush`)."""
        return self._n_buf

    @property
    def shift_(self) -> np.ndarray | None:
        """With ``standardize``: each feature's warm-up mean, shape (n_features,); else None."""
        return None if self._shift is None else self._shift.copy()

    @property
    def scale_(self) -> np.ndarray | None:
        """With ``standardize``: each feature's warm-up scale, shape (n_features,); else None."""
        return None if self._scale is None else self._scale.copy()

    @staticmethod
    def _finite(v: Any) -> bool:
        if v is None or isinstance(v, (str, bytes)):
            return False
        try:
            return math.isfinite(v)
        except TypeError:
            return False

    def _set_schema(self, keys: list[Hashable]) -> None:
        try:
            keys = sorted(keys)
        except TypeError:
            keys = list(keys)
        d = len(keys)
        self._keys = keys
        self._index = {k: i for i, k in enumerate(keys)}
        self._buf = np.empty((self.update_every, d))
        warm_up = self.warm_up if self.warm_up is not None else max(100, 10 * self.n_components * d)
        rng = np.random.RandomState(self.seed)
        self._cal_seed = (self.seed if self.seed is not None
                          else int(np.random.SeedSequence().entropy % 2 ** 63))
        initialise = BatchInit(self.n_components, self.covariance_type, self.init_params,
                               self.warm_up_n_init, rng, self.reg_covar, self.tol, self.max_iter)
        schedule = StepSchedule(alpha=float(self.alpha), t0=float(self.t0), unit=float(self.step_unit),
                                halflife=None if self.halflife is None else float(self.halflife))
        min_weight = self.min_weight if self.min_weight is not None else 1e-3 / self.n_components
        self._online = OnlineEM(self.n_components, self.covariance_type, float(self.reg_covar),
                                schedule, warm_up, initialise, min_weight, rng)

    def _values(self, x: dict) -> np.ndarray:
        """The record as a row of shape (D,) in schema order, NaN where a feature is missing."""
        row = np.full(len(self._keys), np.nan)
        for k, v in x.items():
            i = self._index.get(k)
            if i is not None and self._finite(v):
                row[i] = v
        return row

    # ------------------------------------------------------------------ learning
    def learn_one(self, x: dict) -> None:
        """Learn one record (buffered: see "When learning becomes visible" in the module docs).

        Parameters
        ----------
        x : dict
            Feature name -> number. Not modified and not kept.
        """
        keys = self._keys
        if keys is None:
            observed = [k for k, v in x.items() if self._finite(v)]
            if not observed:
                self.n_incomplete_ += 1
                self.n_incomplete_skipped_ += 1
                return
            self._set_schema(observed)
            keys = self._keys
        try:
            vals = [x[k] for k in keys]
            s = sum(vals)
            ok = s - s == 0.0
        except (KeyError, TypeError):
            ok = False
        if not ok:  # the slow path: big values whose sum overflows, or a missing feature
            row = self._values(x)
            missing = np.isnan(row)
            if missing.any():
                self.n_incomplete_ += 1
                if missing.all() or not (self.learn_incomplete and self._online.initialised):
                    self.n_incomplete_skipped_ += 1
                    return
                self.n_incomplete_learned_ += 1
                self._n_buf_incomplete += 1
            vals = row
        i = self._n_buf
        self._buf[i] = vals
        self._n_buf = i + 1
        self.n_learned_ += 1
        if i + 1 == self.update_every:
            self._apply(self._buf)

    def _apply(self, X: np.ndarray) -> None:
        """One stepwise update from the rows ``X`` (or warm-up buffering), then reset the buffer.

        ``X`` is the learner's own buffer or a copy of it: it may be overwritten. After the warm-up
        it may hold incomplete rows (NaN where missing), learned in the same update.
        """
        online = self._online
        keep, refused = screen_extreme(X, np.arange(X.shape[0]))
        if refused:                                  # too large for the arithmetic: kept out
            self.n_refused_ += len(refused)
            self._n_buf_incomplete -= int(np.isnan(X[~keep]).any(axis=1).sum())
            X = X[keep]
        if online.initialised:
            if self._scale is not None:
                X -= self._shift                     # incomplete rows: on their observed features
                X /= self._scale
            if self._n_buf_incomplete:
                try:
                    self._step_incomplete(X)
                except ValueError:                   # ill-defined: the complete rows, guarded
                    complete = ~np.isnan(X).any(axis=1)
                    self.n_refused_ += int((~complete).sum())
                    self.n_refused_ += len(online.update(X[complete], on_refused="skip"))
            elif X.shape[0]:
                self.n_refused_ += len(online.update(X, on_refused="skip"))
        else:
            self._warm.append(X.copy())
            self._n_warm += X.shape[0]
            if self._n_warm >= max(online.warm_up, self.n_components):
                self._finish_warm_up()
        self._n_buf = 0
        self._n_buf_incomplete = 0
        if online.initialised:
            self._set_evaluators()
            if self._cal_params is None or self.n_learned_ - self._cal_n >= _CAL_EVERY:
                self._cal_params, self._cal_n, self._cal = online.params, self.n_learned_, None

    def _step_incomplete(self, X: np.ndarray) -> None:
        """One stepwise update from rows some of which have missing features (NaN).

        The complete rows' statistics (the core E-step) and the incomplete rows' expected
        statistics (:func:`~online_gmm._marginal.incomplete_statistics`: marginal responsibilities,
        conditional means and covariances), both under the current parameters, are merged (Chan)
        and applied in ONE :meth:`OnlineEM.step <online_gmm._online.OnlineEM.step>`; the incomplete
        records count in the schedule's clock, and only complete rows are re-seeding candidates.
        """
        online = self._online
        params = online.params
        incomplete = np.isnan(X).any(axis=1)
        Xc = np.ascontiguousarray(X[~incomplete])
        stats, ll = online.scorer().expected_statistics(Xc)
        marginals = self._marginals
        if marginals is None or marginals.params is not params:
            marginals = None
        inc, inc_ll = incomplete_statistics(X[incomplete], params, marginals=marginals)
        stats += inc
        n_inc = int(incomplete.sum())
        online.step(Xc, batch=(stats, ll + inc_ll), extra=(n_inc, float(n_inc)))

    def _set_evaluators(self) -> None:
        """One-row evaluators of the current parameters (after every update)."""
        params = self._online.params
        self._row = RowScorer(params)
        self._marginals = MarginalCache(params)
        self._fitted = _View(self._row, self._marginals, self._shift, self._scale, self._log_scale)

    def _finish_warm_up(self) -> None:
        """Hand the warm-up rows to the core in one batch (it fits them); with ``standardize``,
        freeze the scale of the warm-up rows first and standardise them."""
        W = np.concatenate(self._warm)
        self._warm, self._n_warm, self._pre = [], 0, None
        if self.standardize:
            stats = SufficientStatistics.from_resp(W, np.ones((W.shape[0], 1)), covariance_type="diag")
            self._shift, self._scale = _feature_scale(stats)
            self._log_scale = np.log(self._scale)
            W -= self._shift
            W /= self._scale
        self.n_refused_ += len(self._online.update(W, on_refused="skip"))

    def flush(self) -> None:
        """Apply the buffered records now (a partial batch), so that they become visible."""
        if self._n_buf:
            self._apply(self._buf[: self._n_buf].copy())

    def learn_many(self, X) -> None:
        """Learn the rows of a DataFrame; the same model as ``learn_one`` on each row in order.

        Parameters
        ----------
        X : pandas.DataFrame of shape (n_samples, n_columns)
            Columns are feature names; NaN or None marks a missing value.
        """
        if len(X) == 0:
            return
        if self._keys is None:
            # the schema comes from the first row with a finite value, as in learn_one
            self._keys = list(X.columns)
            finite = np.isfinite(self._frame(X))
            self._keys = None
            has = np.flatnonzero(finite.any(axis=1))
            if has.size == 0:
                self.n_incomplete_ += len(X)
                self.n_incomplete_skipped_ += len(X)
                return
            first = int(has[0])
            self.n_incomplete_ += first
            self.n_incomplete_skipped_ += first
            self._set_schema([c for c, f in zip(X.columns, finite[first]) if f])
            X = X.iloc[first:]
        A = self._frame(X)
        missing = np.isnan(A)
        incomplete = missing.any(axis=1)
        n_inc = int(incomplete.sum())
        if n_inc:
            self.n_incomplete_ += n_inc
            self._learn_rows_incomplete(A, missing, incomplete)
            return
        m = self.update_every
        pos = 0
        while pos < A.shape[0]:
            take = min(m - self._n_buf, A.shape[0] - pos)
            self._buf[self._n_buf: self._n_buf + take] = A[pos: pos + take]
            self._n_buf += take
            self.n_learned_ += take
            pos += take
            if self._n_buf == m:
                self._apply(self._buf)

    def _learn_rows_incomplete(self, A: np.ndarray, missing: np.ndarray, incomplete: np.ndarray
                               ) -> None:
        """``learn_many`` for rows some of which are incomplete: the rows ``learn_one`` would
        buffer, at the same boundaries. Between two updates the policy is fixed: complete rows only
        during the warm-up (or with ``learn_incomplete=False``), afterwards every row with an
        observed feature."""
        complete_idx = np.flatnonzero(~incomplete)
        learnable_idx = np.flatnonzero(~missing.all(axis=1)) if self.learn_incomplete else complete_idx
        m = self.update_every
        n = A.shape[0]
        pos = 0
        while pos < n:
            idx = learnable_idx if self._online.initialised else complete_idx
            start = int(np.searchsorted(idx, pos))
            need = m - self._n_buf
            take = idx[start: start + need]
            end = int(take[-1]) + 1 if take.size == need else n
            k = take.size
            self._buf[self._n_buf: self._n_buf + k] = A[take]
            learned = int(incomplete[take].sum())
            self._n_buf_incomplete += learned
            self.n_incomplete_learned_ += learned
            self.n_incomplete_skipped_ += int(incomplete[pos:end].sum()) - learned
            self._n_buf += k
            self.n_learned_ += k
            pos = end
            if self._n_buf == m:
                self._apply(self._buf)

    def _frame(self, X) -> np.ndarray:
        """DataFrame -> (n, D) float array in schema order; NaN where missing or non-finite."""
        frame = X.reindex(columns=self._keys)
        try:
            A = np.array(frame.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
        except (TypeError, ValueError):  # non-numeric entries are missing values
            import pandas as pd
            A = np.array(frame.apply(pd.to_numeric, errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan), dtype=np.float64)
        A[~np.isfinite(A)] = np.nan
        return A

    # ------------------------------------------------------------------ inference, one record
    def _wlp_one(self, x: dict, view: _View) -> tuple[np.ndarray | None, float, tuple]:
        """log w_k + log N(z_o | k) over the observed features ``o``, shape (K,) (None if no feature
        is observed), ``sum_o log scale_o`` (0.0 without standardisation), and (evaluator, ``z_o``,
        observed mask or None when every feature is observed) for :func:`_overflowed` and the
        calibration; ``z`` is the record in the model's units."""
        try:
            vals = [x[k] for k in self._keys]
            s = sum(vals)
            ok = s - s == 0.0
        except (KeyError, TypeError):
            ok = False
        scale = view.scale
        if ok:
            if scale is None:
                return view.row.weighted_log_prob(vals), 0.0, (view.row, vals, None)
            z = np.subtract(vals, view.shift)
            z /= scale
            return view.row.weighted_log_prob(z), view.log_det, (view.row, z, None)
        row = self._values(x)
        observed = ~np.isnan(row)
        if not observed.any():
            return None, 0.0, ()
        jac = 0.0
        if scale is not None:
            row -= view.shift
            row /= scale
            jac = float(view.log_scale[observed].sum())
        if observed.all():
            return view.row.weighted_log_prob(row), jac, (view.row, row, None)
        evaluator = view.marginals.get(observed)
        return evaluator.weighted_log_prob(row[observed]), jac, (evaluator, row[observed], observed)

    def _log_likelihood_parts(self, x: dict) -> tuple[float, float, _View | None, np.ndarray | None]:
        """(log p_z(z_o) in the model's units, ``sum_o log scale_o``, the view, the observed mask or
        None when complete); the view is None (and log p 0.0) without a model or observed feature."""
        view = self._fitted
        if view is None:
            view = self._provisional()
            if view is None:
                return 0.0, 0.0, None, None
        wlp, jac, how = self._wlp_one(x, view)
        if wlp is None:
            return 0.0, 0.0, None, None
        ll = RowScorer.log_sum(wlp)
        if not math.isfinite(ll):                    # overflow (or -inf): never NaN, never plausible
            ll = _overflowed(how)[1]
        return ll, jac, view, how[2]

    def _log_likelihood_one(self, x: dict) -> float:
        ll, jac, _, _ = self._log_likelihood_parts(x)
        return ll - jac

    #: score records during the warm-up with a provisional diagonal Gaussian (anomaly detector only)
    _provisional_scores = False

    def _provisional(self) -> _View | None:
        """Before the warm-up fit: one diagonal Gaussian of the complete records learned so far.

        Its statistics are folded in exactly (Chan merge of :class:`SufficientStatistics`, the core's
        M-step ``to_params(reg_covar)``) from the rows waiting for the warm-up fit, incrementally:
        each row is folded once. With ``standardize``, the Gaussian is that of the rows standardised
        by their current mean and scale (so ``reg_covar`` is relative, as after the fit). None when
        disabled or with fewer than two records learned.
        """
        if not self._provisional_scores or self._online is None or self._online.initialised:
            return None
        parts = self._warm + ([self._buf[: self._n_buf]] if self._n_buf else [])
        total = sum(len(b) for b in parts)
        if total < 2:
            return None
        pre = getattr(self, "_pre", None)
        if pre is None or pre[0] > total:
            pre = (0, None, None)
        done, stats, view = pre
        if done < total:
            tail, pos = [], 0
            for b in parts:
                if pos + len(b) > done:
                    tail.append(b[max(0, done - pos):])
                pos += len(b)
            Xt = np.concatenate(tail)
            new = SufficientStatistics.from_resp(Xt, np.ones((Xt.shape[0], 1)), covariance_type="diag")
            stats = new if stats is None else stats + new
            shift = scale = log_scale = None
            model = stats
            if self.standardize:
                shift, scale = _feature_scale(stats)
                log_scale = np.log(scale)
                model = SufficientStatistics("diag", stats.weights, (stats.means - shift) / scale,
                                             stats.scatter / scale ** 2)
            params = model.to_params(float(self.reg_covar))
            view = _View(RowScorer(params), MarginalCache(params), shift, scale, log_scale,
                         provisional=True)
            self._pre = (total, stats, view)
        return view

    def predict_proba_one(self, x: dict) -> dict[int, float]:
        """Posterior probability of each component given the observed features of ``x``.

        Returns
        -------
        dict of int to float
            ``n_components`` entries summing to one; uniform before the warm-up is over.
        """
        k_comp = self.n_components
        view = self._fitted
        if view is None:
            return {k: 1.0 / k_comp for k in range(k_comp)}
        wlp, _, how = self._wlp_one(x, view)
        if wlp is None:
            p = self._online.params.weights
        else:
            ll = RowScorer.log_sum(wlp)
            if math.isfinite(ll):
                p = np.exp(wlp - ll)
                if ll < -_FAR:               # log p absorbed the log of the sum: normalise
                    p /= p.sum()
            else:
                p = _overflowed(how)[2]
        return {k: float(v) for k, v in enumerate(p)}

    def predict_one(self, x: dict) -> int:
        """The most probable component of ``x`` (0 before the warm-up is over)."""
        view = self._fitted
        if view is None:
            return 0
        wlp, _, how = self._wlp_one(x, view)
        if wlp is None:
            return int(self._online.params.weights.argmax())
        k = int(wlp.argmax())
        return k if math.isfinite(wlp[k]) else int(_overflowed(how)[2].argmax())

    def nll_one(self, x: dict) -> float:
        """Negative log-likelihood -log p(x) of the observed features of ``x`` (in nats).

        0.0 for a record with no observed feature, and before the warm-up is over (except for
        :class:`GMMAnomalyDetector`, which scores with a provisional diagonal Gaussian then). With
        ``standardize``, the density is that of ``x`` in its own units (see the module docstring).
        """
        return -self._log_likelihood_one(x)

    def score_one(self, x: dict) -> float:
        """Negative log-likelihood of the observed features of ``x``: higher is more anomalous
        (:meth:`nll_one`; :class:`GMMAnomalyDetector` calibrates it to [0, 1])."""
        return -self._log_likelihood_one(x)

    # ------------------------------------------------------------------ inference, many records
    def _wlp_many(self, X) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple | None]:
        """For the rows of a DataFrame: log w_k + log N(z_o | k), shape (n, K); log p(z_o), shape (n,)
        (0.0 where nothing is observed); and ``sum_o log scale_o``, shape (n,) (zeros without
        standardisation), so that log p(x_o) = log p(z_o) - that sum."""
        params = self._online.params
        A = self._frame(X)
        obs = ~np.isnan(A)
        if self._scale is not None:
            A -= self._shift
            A /= self._scale
        n = A.shape[0]
        wlp = np.empty((n, self.n_components))
        complete = obs.all(axis=1)
        if complete.any():
            wlp[complete] = self._online.scorer().weighted_log_prob(np.ascontiguousarray(A[complete]))
        rest = np.flatnonzero(~complete)
        if rest.size:
            patterns, inverse = np.unique(obs[rest], axis=0, return_inverse=True)
            for j, pat in enumerate(patterns):
                rows = rest[inverse.reshape(-1) == j]
                if not pat.any():
                    wlp[rows] = np.log(params.weights)
                    continue
                sub = self._marginals.get(pat).params
                wlp[rows] = Scorer(sub).weighted_log_prob(np.ascontiguousarray(A[np.ix_(rows, np.flatnonzero(pat))]))
        m = wlp.max(axis=1)
        with np.errstate(invalid="ignore"):
            log_p = m + np.log(np.exp(wlp - m[:, None]).sum(axis=1))
        lost = np.flatnonzero(~np.isfinite(m) & obs.any(axis=1))
        if lost.size:          # zero density under every component (overflow): log p = -inf, and
            log_p[lost] = -np.inf   # the responsibilities of the core's rule (see predict_proba_many)
            lost_resp = (lost, np.stack([
                (self._row if obs[i].all() else self._marginals.get(obs[i])).overflow_safe(
                    A[i, obs[i]])[2] for i in lost.tolist()]))
        else:
            lost_resp = None
        none = ~obs.any(axis=1)
        log_p[none] = 0.0
        jac = np.zeros(n) if self._scale is None else obs @ self._log_scale
        return wlp, log_p, jac, lost_resp

    def predict_many(self, X):
        """Most probable component of each row of a DataFrame, as a pandas Series of int."""
        import pandas as pd
        if self._row is None:
            return pd.Series(np.zeros(len(X), dtype=int), index=X.index)
        wlp, _, _, lost = self._wlp_many(X)
        labels = wlp.argmax(axis=1)
        if lost is not None:
            rows, resp = lost
            labels[rows] = resp.argmax(axis=1)
        return pd.Series(labels, index=X.index)

    def predict_proba_many(self, X):
        """Posterior probabilities, a DataFrame of shape (n_samples, n_components)."""
        import pandas as pd
        k_comp = self.n_components
        if self._row is None:
            return pd.DataFrame(np.full((len(X), k_comp), 1.0 / k_comp), index=X.index)
        wlp, log_p, _, lost = self._wlp_many(X)
        none = np.isnan(self._frame(X)).all(axis=1)
        with np.errstate(invalid="ignore"):
            p = np.exp(wlp - log_p[:, None])
        far = log_p < -_FAR                   # log p absorbed the log of the sum: normalise
        if far.any():
            p[far] /= p[far].sum(axis=1, keepdims=True)
        if lost is not None:
            rows, resp = lost
            p[rows] = resp
        p[none] = self._online.params.weights
        return pd.DataFrame(p, index=X.index)

    def nll_many(self, X):
        """Negative log-likelihood of each row of a DataFrame (a pandas Series of float)."""
        import pandas as pd
        if self._row is None:
            if self._provisional() is None:
                return pd.Series(np.zeros(len(X)), index=X.index)
            return pd.Series([self.nll_one(x) for x in X.to_dict(orient="records")], index=X.index)
        _, log_p, jac, _ = self._wlp_many(X)
        return pd.Series(jac - log_p, index=X.index)

    def score_many(self, X):
        """:meth:`score_one` of each row of a DataFrame (a pandas Series of float)."""
        return self.nll_many(X)

    @classmethod
    def _unit_test_params(cls):
        yield {"n_components": 2, "warm_up": 60, "update_every": 8, "seed": 1}
        yield {"n_components": 3, "covariance_type": "diag", "warm_up": 60, "update_every": 4,
               "init_params": "k-means++", "seed": 2}
        yield {"n_components": 2, "covariance_type": "tied", "warm_up": 40, "update_every": 8,
               "standardize": True, "seed": 3}


_PARAMS_DOC = """
    Parameters
    ----------
    n_components
        Number of mixture components.
    covariance_type
        'full', 'tied', 'diag' or 'spherical'.
    update_every
        Records buffered between stepwise EM updates (the M-step is paid once per batch).
    warm_up
        Complete records fitted by batch EM before the first stepwise update; None is
        ``max(100, 10 * n_components * n_features)``.
    reg_covar
        Added to the diagonal of every covariance.
    alpha
        Decay exponent of the step size, in [0.5, 1] (1 with ``t0=0``: the exact running average).
        1.0, as :class:`~online_gmm.estimator.OnlineGaussianMixture` (the best one-pass held-out
        likelihood on stationary streams); for drifting streams set ``halflife`` or a smaller value.
    t0
        Offset of the schedule, in units of ``step_unit`` records.
    step_unit
        Records per schedule step.
    halflife
        If set, forget at a constant rate: a record's weight halves every ``halflife`` records.
    init_params
        Initialisation of the warm-up fit: 'kmeans', 'k-means++', 'random' or 'random_from_data'.
    warm_up_n_init
        Starts of the warm-up batch EM (the best is kept).
    max_iter
        EM iterations per warm-up start.
    tol
        Convergence tolerance of the warm-up EM.
    min_weight
        Components whose weight falls below it are re-seeded (default ``1e-3 / n_components``).
    standardize
        Fit the mixture to the features standardised by their warm-up mean and standard deviation
        (frozen at the warm-up fit; ``reg_covar`` becomes relative to each feature's variance);
        scores stay densities of the records in their own units. See :mod:`online_gmm.river`.
    seed
        Random seed (warm-up initialisation, re-seeding).
    learn_incomplete
        After the warm-up fit, learn records with missing features through their conditional
        expectations under the current mixture (exact EM for data missing at random; see
        :mod:`online_gmm.river`). False skips them (they are only counted).

    Attributes
    ----------
    features_ : list or None
        The schema (feature names in model order).
    params_ : GaussianParams or None
        The current parameters.
    n_learned_ : int
        Records learned, buffered ones included: complete records plus the incomplete records
        learned (``n_incomplete_learned_``).
    n_incomplete_ : int
        Records with a feature of the schema missing, None, NaN or infinite, learned or not:
        ``n_incomplete_ == n_incomplete_learned_ + n_incomplete_skipped_``.
    n_incomplete_learned_ : int
        Incomplete records learned through their conditional expectations (after the warm-up
        fit, with ``learn_incomplete=True`` and at least one feature of the schema observed).
    n_incomplete_skipped_ : int
        Incomplete records not learned: during the warm-up, with ``learn_incomplete=False``, or
        with no feature of the schema observed.
    n_pending_ : int
        Records buffered, not yet visible in predictions.
    shift_, scale_ : ndarray of shape (n_features,) or None
        With ``standardize``: the frozen warm-up mean and scale of each feature.
"""


class OnlineGMM(_DictGMM, base.Clusterer):
    __doc__ = """Gaussian mixture clustering of a stream of dicts by stepwise (online) EM.

    ``learn_one`` buffers records and applies one stepwise EM update every ``update_every`` records;
    ``predict_one`` is the most probable component, ``predict_proba_one`` the posterior, and
    ``score_one`` the negative log-likelihood (higher is more anomalous). Missing features are
    marginalised exactly in predictions, and records with missing features are learned through
    their conditional expectations (EM for incomplete data); see :mod:`online_gmm.river` for the
    feature policy and for when a learned record becomes visible.
    """ + _PARAMS_DOC + """
    Examples
    --------
    >>> import random
    >>> from online_gmm.river import OnlineGMM
    >>> rng = random.Random(0)
    >>> stream = [{"a": rng.gauss(c, 1.0), "b": rng.gauss(c, 1.0)}
    ...           for _ in range(300) for c in (-6.0, 6.0)]
    >>> model = OnlineGMM(n_components=2, warm_up=100, update_every=16, seed=0)
    >>> model.predict_one({"a": 0.0, "b": 0.0})        # before learning: cluster 0
    0
    >>> for x in stream:
    ...     model.learn_one(x)
    >>> model.predict_one({"a": -6.0, "b": -6.0}) != model.predict_one({"a": 6.0, "b": 6.0})
    True
    >>> proba = model.predict_proba_one({"a": 6.0})     # "b" missing: marginalised
    >>> round(max(proba.values()), 3)
    1.0
    >>> model.learn_one({"a": -6.5})                    # learned through E[b | a] (and its variance)
    >>> model.n_incomplete_, model.n_incomplete_learned_
    (1, 1)
    >>> model.score_one({"a": 6.0, "b": 6.0}) < model.score_one({"a": 0.0, "b": 0.0})
    True
    """


class GMMAnomalyDetector(_DictGMM, base.AnomalyDetector):
    _provisional_scores = True

    __doc__ = """Anomaly detector on an online Gaussian mixture (the model of :class:`OnlineGMM`),
    with scores on River's scale: in [0, 1], higher is more anomalous.

    ``learn_one`` updates the mixture. ``score_one(x)`` is the probability, under the current
    model, that a random record is at least as likely as ``x``: ``P(log p(Y) >= log p(x))`` for
    ``Y`` drawn from the model, i.e. the model's own CDF of ``-log p`` at ``-log p(x)``. About 1% of
    the records the model describes well score above 0.99, whatever the dimension or the units,
    so River's ``metrics.ROCAUC`` (thresholds spread over [0, 1]), ``anomaly.QuantileFilter`` and
    ``anomaly.ThresholdFilter`` apply as they are. ``nll_one(x)`` is ``-log p(x)`` in nats
    (:class:`online_gmm.anomaly.NLLFilter` thresholds it; see :func:`negative_log_likelihood`).

    **Calibration.** After each update, the NLLs of ``M = 1000`` records drawn from the mixture
    (under the core's :class:`~online_gmm._em.Scorer`) are sorted, ``q_1 <= ... <= q_M``; with
    ``s = -log p(x)`` and ``h = 1 / (M + 1)``:

    * ``q_1 < s < q_M``: linear interpolation between the plotting positions ``i h`` at ``q_i``;
    * ``s <= q_1`` (more likely than every draw): ``h exp(s - q_1)``;
    * ``s >= q_M`` (beyond every draw): ``1 - h / (1 + s - q_M)``. The true tail of ``-log p``
      decays about as ``exp(-(s - q_M))`` (a chi-square's); its hyperbolic stand-in matches it at
      ``q_M`` to first order and keeps far records apart: scores stay distinct, in the order of
      ``-log p``, for excesses up to about 1e13 nats (where ``exp`` would tie them all at 1.0 past
      about 37 nats). ``-log p = inf`` scores 1.0.

    So for a fixed model the score is a continuous, strictly increasing function of ``-log p(x)``.
    The draws are fixed (a uniform for the systematic choice of components and ``M`` standard
    normal rows, from a generator seeded by ``seed``): the sample is a function of the parameters,
    so the same stream gives the same scores. It is redrawn at each update after which 256 records
    or more were learned since the last redraw (every second update with ``update_every=128``;
    scores use the current parameters, their calibration those of the last redraw), and evaluated
    at the first score that needs it: ``M`` rows through the E-step kernel, about 1.2 ms with 8
    full components in 16 dimensions, about 5 µs per record learned.
    A record with missing features is calibrated against the marginal of the same draws over its
    observed features; with ``standardize``, in the model's units (the Jacobian cancels).

    Until the warm-up fit, records are scored by a provisional model: one diagonal Gaussian of the
    complete records learned so far (exact running mean and variances plus ``reg_covar``; 0.0
    before two records were learned), so a long warm-up does not leave the start of a stream
    unscored. It is calibrated exactly by the same rule without sampling (``-log p`` minus its value
    at the mean is half a chi-square whatever the parameters: the draws' half squared norms).
    Score before learning (prequential). When the features' scales differ, set
    ``standardize=True``: each feature is standardised by its warm-up mean and standard deviation,
    frozen at the warm-up fit, so ``reg_covar`` becomes relative (see :mod:`online_gmm.river`);
    otherwise ``reg_covar`` is an absolute floor on the variances.
    """ + _PARAMS_DOC + """
    Examples
    --------
    A prequential loop (score, then learn) with River's ``metrics.ROCAUC``; every 50th record is
    shifted by 6 standard deviations:

    >>> import random
    >>> from river import metrics
    >>> from online_gmm.river import GMMAnomalyDetector
    >>> rng = random.Random(1)
    >>> model = GMMAnomalyDetector(n_components=1, warm_up=100, standardize=True, seed=0)
    >>> auc = metrics.ROCAUC()
    >>> for i in range(1000):
    ...     is_anomaly = i % 50 == 49
    ...     x = {"u": rng.gauss(0.0, 1.0) + 6.0 * is_anomaly, "v": rng.gauss(10.0, 2.0)}
    ...     auc.update(is_anomaly, model.score_one(x))
    ...     model.learn_one(x)
    >>> auc                                  # River's default: 10 thresholds over [0, 1]
    ROCAUC: 95.77%
    >>> 0.99 < model.score_one({"u": 8.0, "v": 10.0}) < 1.0
    True
    >>> model.nll_one({"u": 8.0, "v": 10.0}) > model.nll_one({"u": 0.0, "v": 10.0})
    True
    """


    # ------------------------------------------------------------------ calibrated scores
    def score_one(self, x: dict) -> float:
        """Anomaly score of ``x`` in [0, 1] (higher is more anomalous): the probability, under the
        current model, that a random record is at least as likely as ``x`` (see the class
        docstring). 0.0 for a record with no observed feature and before two records were
        learned. Does not change the model; -log p(x) itself is :meth:`nll_one`.
        """
        ll, _, view, observed = self._log_likelihood_parts(x)
        if view is None:
            return 0.0
        offset, q = self._calibration(view, observed)
        return _cdf_one(q, -ll - offset)

    def score_many(self, X):
        """:meth:`score_one` of each row of a DataFrame (a pandas Series of float in [0, 1])."""
        import pandas as pd
        view = self._fitted
        if view is None:
            if self._provisional() is None:
                return pd.Series(np.zeros(len(X)), index=X.index)
            return pd.Series([self.score_one(x) for x in X.to_dict(orient="records")], index=X.index)
        _, log_p, _, _ = self._wlp_many(X)
        obs = ~np.isnan(self._frame(X))
        out = np.zeros(len(X))
        patterns, inverse = np.unique(obs, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        for j, pat in enumerate(patterns):
            if not pat.any():
                continue                              # nothing observed: 0.0
            rows = inverse == j
            offset, q = self._calibration(view, None if pat.all() else pat)
            out[rows] = _cdf_many(np.asarray(q), -log_p[rows] - offset)
        return pd.Series(out, index=X.index)

    def _draws(self) -> tuple[float, np.ndarray]:
        """The fixed draws of the calibration: a uniform offset and ``_N_CALIBRATION`` standard
        normal rows, from a generator seeded by ``seed`` (kept with the schema); derived state."""
        if self._cal_draws is None:
            rng = np.random.default_rng(self._cal_seed)
            u0 = float(rng.random())
            self._cal_draws = (u0, rng.standard_normal((_N_CALIBRATION, len(self._keys))))
        return self._cal_draws

    def _calibration(self, view: _View, observed: np.ndarray | None) -> tuple[float, list[float]]:
        """(offset, sorted sample NLLs) of the parameter set of ``view`` over the features
        ``observed`` (None: all), in the model's units: a record's score is
        ``_cdf_one(q, nll_z - offset)``. Built at the first score that needs it (``_N_PATTERNS``
        patterns kept).

        * Mixture: the NLLs, under the core's :class:`~online_gmm._em.Scorer` (of the marginal for
          an incomplete pattern), of a sample drawn with the fixed draws (:func:`_mixture_sample`;
          the marginal of a sample is a sample of the marginal) from ``_cal_params``: the
          parameters of the last update at which ``_CAL_EVERY`` records or more had been learned
          since the previous redraw (the first fit included), so the redraws fall at the same
          updates whoever scores what.
        * Provisional diagonal Gaussian: NLL - NLL(mean) is half the squared norm of a standard
          normal vector whatever the mean and variances, so the sample is the draws' half squared
          norms (computed once per pattern) and the offset the NLL at the mean: nothing is
          sampled as the provisional model moves with each record.
        """
        key = b"" if observed is None else observed.tobytes()
        u0, E = self._draws()
        if view.provisional:
            cal = view.cal.get(key)
            if cal is not None:
                return cal
            evaluator = view.row if observed is None else view.marginals.get(observed)
            base = self._cal_base.get(key)
            if base is None:
                Eo = E if observed is None else E[:, observed]
                base = np.sort(0.5 * np.einsum("ij,ij->i", Eo, Eo)).tolist()
                if len(self._cal_base) >= _N_PATTERNS:
                    self._cal_base.pop(next(iter(self._cal_base)))
                self._cal_base[key] = base
            mean = evaluator.params.means[0]
            cal = (-RowScorer.log_sum(evaluator.weighted_log_prob(mean)), base)
            if len(view.cal) >= _N_PATTERNS:
                view.cal.pop(next(iter(view.cal)))
            view.cal[key] = cal
            return cal
        store = self._cal
        if store is None:
            params = self._cal_params
            store = self._cal = {"samples": _mixture_sample(params, u0, E),
                                 "marginals": MarginalCache(params), "q": {}}
        cal = store["q"].get(key)
        if cal is None:
            Z = store["samples"]
            if observed is not None:
                Z = np.ascontiguousarray(Z[:, observed])
                params = store["marginals"].get(observed).params
            else:
                params = self._cal_params
            with np.errstate(over="ignore", under="ignore"):
                nll = -Scorer(params).score_samples(Z)
            cal = (0.0, np.sort(nll).tolist())
            if len(store["q"]) >= _N_PATTERNS:
                store["q"].pop(next(iter(store["q"])))
            store["q"][key] = cal
        return cal
