"""Guards of the online model's arithmetic: records refused before any arithmetic (values too large),
the reference scales an update may not exceed, the bisection that finds the records that make an
update ill-defined, and the random state as JSON. Used by :mod:`online_gmm._online` (which re-exports
the public names) and the front ends."""

from __future__ import annotations

from typing import Callable

import numpy as np

from online_gmm._em import GaussianParams

__all__ = ["MAX_ABS", "SCALE_LIMIT", "Refused", "RefusedRecordsError", "rng_state_from_json",
           "rng_state_to_json", "screen_extreme"]

#: Largest ratio of a component's variance in a feature to the data's (the mixture's variance of that
#: feature before the update; in the warm-up, the buffer's trimmed variance, floored at reg_covar)
#: that an update may produce: a component stretched 1e6 standard deviations of the data is the
#: mark of a record far outside the data, and its covariance's Cholesky factor then has too few
#: significant digits for the next updates to stay well-defined (a factor of 1e15 fails outright).
SCALE_LIMIT = 1e12

#: ``(id, reason)`` of a record kept out of the model
Refused = tuple[int, str]

#: Largest magnitude of a value the model's arithmetic accepts. Squares of centred values then stay
#: below 1e300 (the second moments, the Mahalanobis distances), which leaves a factor 1e8 below the
#: largest double (1.8e308) for the sums over features and rows and the products with precisions of
#: data of scale ~1: a value beyond it (whose square overflows past about 1.3e154) never reaches them.
MAX_ABS = 1e150
_MAX_ABS64 = np.float64(MAX_ABS)


class RefusedRecordsError(ValueError):
    """Records would make an update ill-defined (or are too large); the state was left unchanged.

    Attributes
    ----------
    refused : list of (int, str)
        ``(id, reason)`` of each record to keep out.
    """

    def __init__(self, message: str, refused: list[Refused]) -> None:
        super().__init__(message)
        self.refused = refused


def screen_extreme(X: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray | None, list[Refused]]:
    """Rows of ``X`` with a value beyond :data:`MAX_ABS`, and why.

    Two vectorised reductions (max and min) on a clean batch; per-row work only when one fails.
    NaN (a missing value, for the River learners) is not extreme.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    ids : ndarray of int64 of shape (n_samples,)

    Returns
    -------
    keep : ndarray of bool of shape (n_samples,), or None when every row is fine
    refused : list of (id, reason)
    """
    if X.size == 0:
        return None, []
    # a float64 scalar (not a Python float, which float32 data would round to inf): inf is refused
    if X.max() <= _MAX_ABS64 and X.min() >= -_MAX_ABS64:   # False with a NaN: then the slow check
        return None, []
    with np.errstate(invalid="ignore"):
        big = np.abs(X) > _MAX_ABS64
    rows = np.flatnonzero(big.any(axis=1))
    if rows.size == 0:
        return None, []
    refused = []
    for i in rows.tolist():
        j = int(np.argmax(np.where(big[i], np.abs(X[i]), -1.0)))
        why = (f"value {X[i, j]:.3g} in feature {j} is too large for the model's arithmetic "
               f"(|x| > {MAX_ABS:.0e})")
        refused.append((int(ids[i]), why))
    keep = np.ones(X.shape[0], dtype=bool)
    keep[rows] = False
    return keep, refused


def _component_variances(params: GaussianParams) -> np.ndarray:
    """Each component's variance in each feature, shape (K, D), whatever the covariance type."""
    cov = params.covariance_matrices()
    k_comp, d = params.means.shape
    if params.covariance_type == "full":
        return np.diagonal(cov, axis1=1, axis2=2)
    if params.covariance_type == "tied":
        return np.broadcast_to(np.diag(cov), (k_comp, d))
    if params.covariance_type == "diag":
        return cov
    return np.broadcast_to(cov[:, None], (k_comp, d))


def _mixture_variances(params: GaussianParams) -> np.ndarray:
    """The mixture's variance of each feature, shape (D,)."""
    w = params.weights
    mean = w @ params.means
    return w @ (_component_variances(params) + (params.means - mean) ** 2)


def _trimmed_variances(X: np.ndarray, floor: float) -> np.ndarray:
    """Each feature's mean squared deviation from its median over all rows but the 1% farthest
    from it (at least one row left out), floored at ``floor``, shape (D,): the warm-up's reference
    scale for :data:`SCALE_LIMIT`. A few extreme records do not inflate it; a legitimate minority
    (a feature that is zero on most rows and large on 5% of them) still counts."""
    n = X.shape[0]
    keep = max(1, n - max(1, int(np.ceil(0.01 * n))))
    dev = np.abs(X - np.median(X, axis=0))
    dev = np.partition(dev, keep - 1, axis=0)[:keep]
    return np.maximum(np.mean(dev * dev, axis=0), floor)


def _check_scale(params: GaussianParams, ref: np.ndarray) -> None:
    """Raise ValueError if a component's variance exceeds :data:`SCALE_LIMIT` times ``ref`` (D,)."""
    ratio = _component_variances(params) / ref
    if ratio.max() > SCALE_LIMIT:
        k, j = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        raise ValueError(f"component {k}'s covariance would be ill-defined: its variance in feature "
                         f"{j} would be {ratio[k, j]:.3g} times the data's")


def _bisect(ok: Callable[[int], bool], lo: int, hi: int) -> int | None:
    """The smallest ``k`` in ``(lo, hi]`` with ``ok(k)``, by bisection (``ok(lo)`` is known to be
    False); None when ``ok(hi)`` is False too."""
    if hi <= lo or not ok(hi):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _refusal(refused: list[Refused]) -> RefusedRecordsError:
    shown = "; ".join(f"record {i}: {why}" for i, why in refused[:5])
    more = f"; and {len(refused) - 5} more" if len(refused) > 5 else ""
    return RefusedRecordsError(
        f"{len(refused)} record(s) would make the update ill-defined and were not learned (the state "
        f"is unchanged): {shown}{more}", refused)


def rng_state_to_json(rng: np.random.RandomState) -> list:
    """A ``RandomState``'s exact state as JSON-able data."""
    name, keys, pos, has_gauss, cached = rng.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def rng_state_from_json(rng: np.random.RandomState, state: list) -> None:
    """Restore a state written by :func:`rng_state_to_json`."""
    name, keys, pos, has_gauss, cached = state
    rng.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
