"""Array API inputs (PyTorch on CPU or CUDA, CuPy, array_api_strict, ...) for the estimator.

With ``sklearn.set_config(array_api_dispatch=True)``, :class:`~online_gmm.OnlineGaussianMixture`
accepts arrays of any namespace and device that scikit-learn's array API support accepts, and
returns its fitted attributes and per-sample outputs in the namespace and on the device of the data
it was fitted on, as :class:`sklearn.mixture.GaussianMixture` does.

The arithmetic itself runs in NumPy on the host: the data cross to the host once per call (one
DLPack or library transfer, :func:`to_numpy`) and the results cross back (:func:`to_space`). The
project keeps one mathematical core (the chunked kernels of :mod:`online_gmm._gaussian`, tuned for
NumPy and OpenBLAS); a device-resident E-step and M-step would be a second implementation of it.
scikit-learn's helpers are imported only when an array that is not NumPy's arrives.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["Space", "check_same_space", "dispatch_enabled", "space_of", "space_of_array", "to_numpy",
           "to_space"]

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
