"""The online model's parameters without scikit-learn: their table, their check, and the OnlineEM they make.

:data:`PARAMETERS` is the one declaration of :class:`~online_gmm.estimator.OnlineGaussianMixture`'s
parameters: their defaults (the estimator's signature reads them from here) and their types and
ranges, as plain tuples that :func:`check_params` checks and that the estimator turns into
scikit-learn's ``Interval``/``StrOptions`` for its ``_parameter_constraints``.
:class:`OnlineModelParams` turns a set of parameters into the :class:`~online_gmm._online.OnlineEM`
that ``partial_fit`` and the pipeline drive; the estimator inherits it, and :class:`ModelSpec` (a
plain holder of the same parameters) gives it to ``online-gmm run``, which thus reaches its first
record without importing scikit-learn, SciPy's statistics or pandas (about 1-2 s of start-up). Those
are imported where they are used: k-means at the end of the warm-up, the estimator when a fitted one
is asked for.

Examples
--------
>>> from online_gmm.model_spec import ModelSpec, check_random_state
>>> spec = ModelSpec(n_components=2, warm_up=50, random_state=0)
>>> spec._validate_params()
>>> online = spec._new_online(3, check_random_state(spec.random_state))
>>> online.n_components, online.warm_up, online.initialised
(2, 50, False)
>>> ModelSpec(n_components=0)._validate_params()
Traceback (most recent call last):
...
online_gmm.model_spec.InvalidParameterError: The 'n_components' parameter of OnlineGaussianMixture must be an int in the range [1, inf). Got 0 instead.
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Any, Mapping, Union

import numpy as np

from online_gmm._batch import BatchInit
from online_gmm._gaussian import KERNELS
from online_gmm._init import INIT_METHODS, check_inits
from online_gmm._online import OnlineEM
from online_gmm._schedule import StepSchedule

__all__ = ["PARAMETERS", "DEFAULTS", "InvalidParameterError", "check_params", "check_random_state",
           "OnlineModelParams", "ModelSpec"]

#: One constraint on a parameter's value, as plain data:
#:
#: - ``("int", low, high, closed)`` / ``("real", low, high, closed)``: an integral / real number in
#:   an interval (a bound of None is infinite; ``closed`` is "left", "right", "both" or "neither", as
#:   in scikit-learn's ``Interval``);
#: - ``("str", options)``: one of these strings;
#: - ``"array-like"``, ``"random_state"``, ``"boolean"``, ``"verbose"``: as scikit-learn's
#:   constraints of those names;
#: - ``None``: None.
Constraint = Union[tuple, str, None]

#: name -> (default, constraints): a value is valid when it meets one of its constraints. The order
#: is the estimator's signature.
PARAMETERS: dict[str, tuple[Any, tuple[Constraint, ...]]] = {
    "n_components": (1, (("int", 1, None, "left"),)),
    "covariance_type": ("full", (("str", tuple(KERNELS)),)),
    "tol": (1e-3, (("real", 0.0, None, "left"),)),
    "reg_covar": (1e-6, (("real", 0.0, None, "left"),)),
    "max_iter": (100, (("int", 0, None, "left"),)),
    "n_init": (1, (("int", 1, None, "left"),)),
    "init_params": ("kmeans", (("str", INIT_METHODS),)),
    "weights_init": (None, ("array-like", None)),
    "means_init": (None, ("array-like", None)),
    "precisions_init": (None, ("array-like", None)),
    "random_state": (None, ("random_state",)),
    "warm_start": (False, ("boolean",)),
    "verbose": (0, ("verbose",)),
    "verbose_interval": (10, (("int", 1, None, "left"),)),
    "alpha": (1.0, (("real", 0.5, 1.0, "both"),)),
    "t0": (2.0, (("real", 0.0, None, "left"),)),
    "step_unit": (1000.0, (("real", 0.0, None, "neither"),)),
    "halflife": (None, (("real", 0.0, None, "neither"), None)),
    "warm_up": ("auto", (("int", 1, None, "left"), ("str", ("auto",)))),
    "warm_up_n_init": (3, (("int", 1, None, "left"),)),
    "min_weight": (None, (("real", 0.0, 1.0, "left"), None)),
}

#: name -> default value
DEFAULTS: dict[str, Any] = {name: default for name, (default, _) in PARAMETERS.items()}

_UINT32_MAX = 2**32 - 1


class InvalidParameterError(ValueError, TypeError):
    """A parameter of the wrong type or out of its range (a ValueError and a TypeError, as
    scikit-learn's error of the same name)."""


# ------------------------------------------------------------------------------------------ checks
def _in_interval(value: Any, kind: str, low: Any, high: Any, closed: str) -> bool:
    if not isinstance(value, numbers.Integral if kind == "int" else numbers.Real):
        return False
    if not isinstance(value, numbers.Integral) and math.isnan(value):
        return False
    low = -math.inf if low is None else low       # an infinite bound is a bound, as in scikit-learn
    high = math.inf if high is None else high
    if value < low or (value == low and closed in ("right", "neither")):
        return False
    return not (value > high or (value == high and closed in ("left", "neither")))


def _is_array_like(value: Any) -> bool:
    """scikit-learn's ``"array-like"``: has a length, a shape or ``__array__``, is not a scalar nor
    a sparse matrix."""
    sparse = sys.modules.get("scipy.sparse")     # a sparse matrix implies scipy.sparse is loaded
    if sparse is not None and sparse.issparse(value):
        return False
    return (hasattr(value, "__len__") or hasattr(value, "shape") or hasattr(value, "__array__")) \
        and not np.isscalar(value)


def _meets(value: Any, constraint: Constraint) -> bool:
    if constraint is None:
        return value is None
    if constraint == "array-like":
        return _is_array_like(value)
    if constraint == "random_state":
        return value is None or isinstance(value, np.random.RandomState) \
            or _in_interval(value, "int", 0, _UINT32_MAX, "both")
    if constraint == "boolean":
        return isinstance(value, (bool, np.bool_))
    if constraint == "verbose":
        return isinstance(value, (bool, np.bool_)) or _in_interval(value, "int", 0, None, "left")
    kind = constraint[0]
    if kind == "str":
        return isinstance(value, str) and value in constraint[1]
    return _in_interval(value, *constraint)


def _describe(constraint: Constraint) -> str:
    """The constraint in words, as scikit-learn's error messages put it."""
    if constraint is None:
        return "None"
    if constraint == "array-like":
        return "an array-like"
    if constraint == "random_state":
        return f"an int in the range [0, {_UINT32_MAX}], an instance of 'numpy.random.RandomState' or None"
    if constraint == "boolean":
        return "a bool"
    if constraint == "verbose":
        return "an int in the range [0, inf) or a bool"
    kind = constraint[0]
    if kind == "str":
        return "a str among {" + ", ".join(map(repr, constraint[1])) + "}"
    _, low, high, closed = constraint
    as_text = str if kind == "int" else (lambda b: str(float(b)))
    return (f"{'an int' if kind == 'int' else 'a float'} in the range "
            f"{'[' if closed in ('left', 'both') else '('}{'-inf' if low is None else as_text(low)}, "
            f"{'inf' if high is None else as_text(high)}{']' if closed in ('right', 'both') else ')'}")


def check_params(params: Mapping[str, Any], owner: str = "OnlineGaussianMixture") -> None:
    """Check the type and range of every parameter in ``params`` against :data:`PARAMETERS`.

    Parameters
    ----------
    params : mapping of str to object
        Parameter values by name; names not in :data:`PARAMETERS` are not checked here.
    owner : str, default="OnlineGaussianMixture"
        Named in the message.

    Raises
    ------
    InvalidParameterError
        For the first parameter that meets none of its constraints; the one-line message names it,
        what it must be, and the value given.
    """
    for name, value in params.items():
        spec = PARAMETERS.get(name)
        if spec is None or any(_meets(value, c) for c in spec[1]):
            continue
        words = [_describe(c) for c in spec[1]]
        must = words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"
        raise InvalidParameterError(
            f"The {name!r} parameter of {owner} must be {must}. Got {value!r} instead.")


def check_random_state(seed: None | int | np.random.RandomState) -> np.random.RandomState:
    """The random generator ``seed`` stands for, as :func:`sklearn.utils.check_random_state`.

    Parameters
    ----------
    seed : None, int or numpy.random.RandomState
        None: NumPy's global generator; an int: a new generator seeded with it; a generator: itself.

    Returns
    -------
    numpy.random.RandomState
    """
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral):
        return np.random.RandomState(seed)
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(f"{seed!r} cannot be used to seed a numpy.random.RandomState instance")


# ------------------------------------------------------------------------------------------ the model
class OnlineModelParams:
    """Builds the :class:`~online_gmm._online.OnlineEM` that a set of parameters defines.

    A mixin for any object that holds the parameters of :data:`PARAMETERS` as attributes: the
    estimator and :class:`ModelSpec`. The parameters are assumed valid (:func:`check_params`).
    """

    #: iterations of each warm-up start's short run before the best one continues (emEM)
    _warm_up_short_iter: int | None = 3

    n_components: int
    covariance_type: str
    init_params: str
    warm_up_n_init: int
    reg_covar: float
    tol: float
    max_iter: int
    min_weight: float | None
    warm_up: int | str
    alpha: float
    t0: float
    step_unit: float
    halflife: float | None
    weights_init: Any
    means_init: Any
    precisions_init: Any

    def _schedule(self) -> StepSchedule:
        return StepSchedule(alpha=float(self.alpha), t0=float(self.t0), unit=float(self.step_unit),
                            halflife=None if self.halflife is None else float(self.halflife))

    def _warm_up_size(self, n_features: int) -> int:
        if self.warm_up == "auto":
            return int(max(2000, 40 * self.n_components * n_features))
        return int(self.warm_up)

    def _inits(self, n_features: int) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        return check_inits(self.weights_init, self.means_init, self.precisions_init,
                           n_components=self.n_components, n_features=n_features,
                           covariance_type=self.covariance_type)

    def _new_online(self, n_features: int, rng: np.random.RandomState) -> OnlineEM:
        """A new, empty online model for ``n_features`` features, drawing from ``rng``."""
        weights_init, means_init, precisions_init = self._inits(n_features)
        initialise = BatchInit(self.n_components, self.covariance_type, self.init_params,
                               self.warm_up_n_init, rng, self.reg_covar, self.tol, self.max_iter,
                               weights_init, means_init, precisions_init,
                               short_iter=self._warm_up_short_iter)
        min_weight = self.min_weight if self.min_weight is not None else 1e-3 / self.n_components
        return OnlineEM(self.n_components, self.covariance_type, self.reg_covar, self._schedule(),
                        self._warm_up_size(n_features), initialise, min_weight, rng)


class ModelSpec(OnlineModelParams):
    """The parameters of an :class:`~online_gmm.estimator.OnlineGaussianMixture`, without it.

    What :class:`~online_gmm.pipeline.Pipeline` needs of its model before the model is fitted, for a
    job that should start without scikit-learn: the parameters (defaults filled in), their check, and
    the :class:`~online_gmm._online.OnlineEM` they define.

    Parameters
    ----------
    **params
        Any of the estimator's parameters (:data:`PARAMETERS`); the others take their defaults.

    Attributes
    ----------
    n_features_in_ : int
        Set by the pipeline when its first record arrives, as on the estimator.

    Raises
    ------
    TypeError
        A name that is not a parameter of the estimator.
    """

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(PARAMETERS))
        if unknown:
            raise TypeError(f"unknown parameter(s) of OnlineGaussianMixture: {', '.join(map(repr, unknown))}")
        for name, value in {**DEFAULTS, **params}.items():
            setattr(self, name, value)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The parameters by name, as the estimator's ``get_params``."""
        return {name: getattr(self, name) for name in PARAMETERS}

    def _validate_params(self) -> None:
        check_params(self.get_params())

    def estimator(self) -> Any:
        """A new, unfitted :class:`~online_gmm.estimator.OnlineGaussianMixture` with these parameters
        (imports scikit-learn)."""
        from online_gmm.estimator import OnlineGaussianMixture
        return OnlineGaussianMixture(**self.get_params())

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if v is not DEFAULTS[k]
                          and not (isinstance(v, (int, float, str)) and v == DEFAULTS[k]))
        return f"ModelSpec({given})"
