"""Array API inputs (PyTorch on CPU or CUDA, CuPy, array_api_strict, ...) for the estimator.

With ``sklearn.set_config(array_api_dispatch=True)``, :class:`~online_gmm.OnlineGaussianMixture`
accepts arrays of any namespace and device that scikit-learn's array API support accepts, and
returns its fitted attributes and per-sample outputs in the namespace and on the device of the data
it was fitted on, as :class:`sklearn.mixture.GaussianMixture` does.

The data stay on their device. The O(N*K*D^2) work, the E-step (log-densities, log-sum-exp,
responsibilities and the responsibility-weighted centred statistics), runs there in the data's
namespace (:class:`~online_gmm._xp_scorer.XpScorer`), as does the validation of the input
(finiteness, the magnitude guard). What crosses, per E-step, is small: the prepared parameters go
to the device (about K*D*D numbers) and the statistics come back (K*D*D numbers, float64), where
the M-step, the Cholesky factorisations and the stepwise schedule of the one shared core run on
the host. Predictions, posteriors and scores are produced on the device. Only these cross the whole
data: the ``partial_fit`` warm-up buffer (host, as for NumPy input, until the first update), a
batch whose update is ill-defined or re-seeds a component (the host finds the rows to refuse or
re-seed from), an error message naming refused rows, and a row whose log-density overflows the
device's arithmetic (see :mod:`online_gmm._xp_scorer`). NumPy input never goes through this path:
it keeps the tuned chunked kernels of :mod:`online_gmm._gaussian`. scikit-learn's helpers are
imported only when an array that is not NumPy's arrives.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["Space", "all_within", "check_same_space", "dispatch_enabled", "float_dtypes",
           "numpy_dtype", "space_of", "space_of_array", "to_numpy", "to_space"]

#: the init_params scikit-learn allows under array API dispatch
DISPATCH_INITS = ("random", "random_from_data")


class Space(NamedTuple):
    """The array namespace and device of the data a model was fitted on (not NumPy's)."""

    xp: Any
    device: Any


def dispatch_enabled() -> bool:
    """Whether scikit-learn's ``array_api_dispatch`` is on."""
    from sklearn import get_config

    return bool(get_config().get("array_api_dispatch", False))


def _plain(a: Any) -> bool:
    return a is None or isinstance(a, (np.ndarray, np.generic, list, tuple, int, float))


def space_of(X: Any) -> Space | None:
    """The namespace and device of ``X`` under array API dispatch; None for NumPy (or array-likes)
    and whenever dispatch is off (then other arrays go through ``np.asarray`` as before)."""
    if _plain(X) or not dispatch_enabled():
        return None
    from sklearn.utils._array_api import _is_numpy_namespace, get_namespace_and_device

    xp, _, device = get_namespace_and_device(X)
    return None if _is_numpy_namespace(xp) else Space(xp, device)


def space_of_array(a: Any) -> Space | None:
    """The namespace and device of a non-NumPy array whatever the dispatch setting (a fitted
    attribute, when a pickled model is loaded: namespaces are modules, which do not pickle)."""
    if _plain(a):
        return None
    from sklearn.externals import array_api_compat

    xp = array_api_compat.array_namespace(a)
    return None if array_api_compat.is_numpy_namespace(xp) else Space(xp, array_api_compat.device(a))


def to_numpy(a: Any) -> Any:
    """``a`` as a NumPy array on the host (array-likes and None unchanged)."""
    if _plain(a):
        return a
    from sklearn.utils._array_api import move_to

    return move_to(a, xp=np, device="cpu")


def to_space(a: np.ndarray, space: Space | None) -> Any:
    """The NumPy array ``a`` in ``space``'s namespace and on its device (unchanged for None)."""
    if space is None:
        return a
    from sklearn.utils._array_api import move_to

    return move_to(np.ascontiguousarray(a), xp=space.xp, device=space.device)


def check_same_space(X: Any, estimator: Any, method: str) -> None:
    """Under dispatch, raise ValueError when ``X`` is not in the namespace and on the device the
    model was fitted with (scikit-learn's ``check_same_namespace``, its message)."""
    if not dispatch_enabled():
        return
    from sklearn.utils._array_api import check_same_namespace

    check_same_namespace(X, estimator, attribute="means_", method=method)


def float_dtypes(space: Space) -> list:
    """The input dtypes kept on ``space`` (anything else becomes the first): float64 where the
    device has it, and float32."""
    from sklearn.utils._array_api import supported_float_dtypes

    xp = space.xp
    return [d for d in supported_float_dtypes(xp, space.device) if d in (xp.float64, xp.float32)]


def numpy_dtype(dtype: Any, space: Space) -> np.dtype:
    """NumPy's dtype of the same kind and width as ``space``'s float ``dtype``."""
    return np.dtype(np.float32 if dtype == space.xp.float32 else np.float64)


def all_within(X: Any, space: Space, limit: float) -> bool:
    """Whether every value of ``X`` lies within +-``limit``, reduced on the device (one boolean
    crosses)."""
    xp = space.xp
    if limit >= float(xp.finfo(X.dtype).max):      # float32 beside 1e150: finite is within
        return True
    return bool(xp.all(xp.abs(X) <= limit))
