"""The state shared by the River learners (:class:`_DictGMM`): parameters and their checks, the
schema, the counters, pickling; it gathers the learning (:mod:`online_gmm._river_learning`) and the
inference (:mod:`online_gmm._river_inference`) of :class:`~online_gmm.river.OnlineGMM` and
:class:`~online_gmm.river.GMMAnomalyDetector` (see :mod:`online_gmm.river`).
"""

from __future__ import annotations

import copy
import math
import numbers
from typing import Any, Hashable

import numpy as np

from online_gmm._batch import BatchInit
from online_gmm._em import GaussianParams
from online_gmm._gaussian import KERNELS
from online_gmm._init import INIT_METHODS
from online_gmm._marginal import MarginalCache, RowScorer
from online_gmm._online import OnlineEM
from online_gmm._river_inference import _Inference, _View
from online_gmm._river_learning import _Learning
from online_gmm._schedule import StepSchedule


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


class _DictGMM(_Learning, _Inference):
    """The state and methods shared by the River learners (see :mod:`online_gmm.river`)."""

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

    def _set_evaluators(self) -> None:
        """One-row evaluators of the current parameters (after every update)."""
        params = self._online.params
        self._row = RowScorer(params)
        self._marginals = MarginalCache(params)
        self._fitted = _View(self._row, self._marginals, self._shift, self._scale, self._log_scale)

    @classmethod
    def _unit_test_params(cls):
        yield {"n_components": 2, "warm_up": 60, "update_every": 8, "seed": 1}
        yield {"n_components": 3, "covariance_type": "diag", "warm_up": 60, "update_every": 4,
               "init_params": "k-means++", "seed": 2}
        yield {"n_components": 2, "covariance_type": "tied", "warm_up": 40, "update_every": 8,
               "standardize": True, "seed": 3}
