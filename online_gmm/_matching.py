"""Component identity across refits: Bhattacharyya distances, Hungarian matching, permutations.

:func:`bhattacharyya_distances`, :func:`match_components` and :class:`ComponentMatching`
    match a refit's components to the online model's (Hungarian assignment on Bhattacharyya
    distances), so that component ids stay stable.
:func:`permute_statistics` / :func:`permute_params`
    reorder a mixture's components.

Moved here from :mod:`online_gmm.refit`, which still exports these names (import them from there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from online_gmm._em import GaussianParams
from online_gmm._suffstats import SufficientStatistics

__all__ = ["ComponentMatching", "bhattacharyya_distances", "match_components", "permute_statistics",
           "permute_params"]


def _full_covariances(params: GaussianParams) -> np.ndarray:
    """Covariances of every component as (K, D, D) matrices, whatever the covariance type."""
    k_comp, d = params.means.shape
    cov = params.covariance_matrices()
    ctype = params.covariance_type
    eye = np.eye(d)
    if ctype == "full":
        return np.asarray(cov)
    if ctype == "tied":
        return np.broadcast_to(cov, (k_comp, d, d)).copy()
    if ctype == "diag":
        return cov[:, :, None] * eye
    return cov[:, None, None] * eye


def bhattacharyya_distances(a: GaussianParams, b: GaussianParams) -> np.ndarray:
    """Bhattacharyya distance between every component of ``a`` and every component of ``b``.

    ``D_B = (mu_a - mu_b)^T S^-1 (mu_a - mu_b) / 8 + log(det S / sqrt(det S_a det S_b)) / 2`` with
    ``S = (S_a + S_b) / 2``.

    Parameters
    ----------
    a, b : GaussianParams
        Same number of features (any covariance types).

    Returns
    -------
    ndarray of shape (a.n_components, b.n_components)
        Non-negative; zero for identical Gaussians.
    """
    if a.n_features != b.n_features:
        raise ValueError(
            f"cannot compare mixtures with {a.n_features} and {b.n_features} features")
    ca, cb = _full_covariances(a), _full_covariances(b)
    s = 0.5 * (ca[:, None] + cb[None, :])                       # (Ka, Kb, D, D)
    chol = np.linalg.cholesky(s)
    diff = b.means[None, :, :] - a.means[:, None, :]           # (Ka, Kb, D)
    z = np.linalg.solve(chol, diff[..., None])[..., 0]
    maha = np.einsum("abd,abd->ab", z, z)
    logdet_s = 2.0 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(axis=-1)
    logdet_a = np.linalg.slogdet(ca)[1]
    logdet_b = np.linalg.slogdet(cb)[1]
    dist = maha / 8.0 + 0.5 * (logdet_s - 0.5 * (logdet_a[:, None] + logdet_b[None, :]))
    return np.maximum(dist, 0.0)


@dataclass
class ComponentMatching:
    """How a new mixture's components line up with the old ones.

    Attributes
    ----------
    order : ndarray of shape (K_new,)
        Apply with :func:`permute_statistics`: position ``i`` of the result holds new component
        ``order[i]``. Matched components come first, at the old positions of their partners (in old
        order); components without a partner follow, in their original order.
    labels : ndarray of shape (K_new,)
        Stable id of each position after the permutation. Survivors keep their old label; new
        components get ``next_label``, ``next_label + 1``, ...; a label is never reused.
    mapping : ndarray of shape (K_old,)
        New position of each old component, or -1 when it has no partner (K shrank).
    next_label : int
        First label not yet used, to pass to the next refit.
    cost : ndarray of shape (K_old, K_new) or None
        The distances the assignment minimised (None for an identity matching).
    """

    order: np.ndarray
    labels: np.ndarray
    mapping: np.ndarray
    next_label: int
    cost: np.ndarray | None = None

    def to_meta(self) -> dict[str, Any]:
        """JSON-able form (for a checkpoint)."""
        return {"order": self.order.tolist(), "labels": self.labels.tolist(),
                "mapping": self.mapping.tolist(), "next_label": int(self.next_label)}


def _check_labels(labels, next_label, k_old: int) -> tuple[np.ndarray, int]:
    labels = np.arange(k_old) if labels is None else np.asarray(labels, dtype=np.int64)
    if labels.shape != (k_old,):
        raise ValueError(f"labels must have shape ({k_old},), got {labels.shape}")
    if np.unique(labels).size != k_old:
        raise ValueError(f"labels must be distinct, got {labels.tolist()}")
    floor = int(labels.max()) + 1 if k_old else 0
    next_label = floor if next_label is None else int(next_label)
    if next_label < floor:
        raise ValueError(f"next_label must exceed every label (>= {floor}), got {next_label}")
    return labels, next_label


def match_components(old: GaussianParams, new: GaussianParams, *, labels: Sequence[int] | None = None,
                     next_label: int | None = None) -> ComponentMatching:
    """Match the components of ``new`` to those of ``old`` so that ids stay stable.

    The Hungarian assignment (:func:`scipy.optimize.linear_sum_assignment`) minimises the summed
    Bhattacharyya distance. That distance is chosen because it is symmetric, finite for any pair of
    non-degenerate Gaussians, works for every covariance type, and -- unlike a Mahalanobis distance
    between means -- also separates components that share a centre but differ in spread (a broad
    background and a tight cluster). Unlike the KL divergence it does not blow up when one
    covariance is much narrower than the other.

    Id policy: see :class:`ComponentMatching`. With ``K_new >= K_old`` every old component keeps its
    position and label and the extra components are appended with fresh labels; with
    ``K_new < K_old`` the survivors are compacted (positions 0..K_new-1, old order) and keep their
    labels, so downstream ids never churn when they report ``labels[position]``.

    Parameters
    ----------
    old, new : GaussianParams
    labels : sequence of int of shape (K_old,), optional
        Stable ids of the old components (default ``range(K_old)``).
    next_label : int, optional
        First unused id (default ``max(labels) + 1``).

    Returns
    -------
    ComponentMatching

    Examples
    --------
    >>> import numpy as np
    >>> from online_gmm._suffstats import SufficientStatistics
    >>> from online_gmm.refit import match_components, permute_params
    >>> X = np.array([[0.0], [0.2], [5.0], [5.2], [9.0], [9.3]])
    >>> resp = np.repeat(np.eye(3), 2, axis=0)
    >>> p = SufficientStatistics.from_resp(X, resp, covariance_type="full").to_params(1e-3)
    >>> m = match_components(p, permute_params(p, [2, 0, 1]))
    >>> m.order.tolist(), m.labels.tolist()
    ([1, 2, 0], [0, 1, 2])
    """
    from scipy.optimize import linear_sum_assignment   # at the first refit, not at start-up

    k_old, k_new = old.n_components, new.n_components
    labels_arr, next_label = _check_labels(labels, next_label, k_old)
    cost = bhattacharyya_distances(old, new)
    rows, cols = linear_sum_assignment(cost)          # rows come back sorted ascending
    matched = set(cols.tolist())
    extra = [j for j in range(k_new) if j not in matched]
    order = np.concatenate([cols, extra]).astype(np.int64)
    new_labels = np.concatenate([labels_arr[rows],
                                 np.arange(next_label, next_label + len(extra))]).astype(np.int64)
    mapping = np.full(k_old, -1, dtype=np.int64)
    mapping[rows] = np.arange(rows.size)
    return ComponentMatching(order, new_labels, mapping, next_label + len(extra), cost)


def permute_statistics(stats: SufficientStatistics, order: Sequence[int]) -> SufficientStatistics:
    """Statistics whose component ``i`` is component ``order[i]`` of ``stats`` (a copy).

    Parameters
    ----------
    stats : SufficientStatistics
    order : sequence of int of shape (n_components,)
        A permutation of ``range(stats.n_components)``.

    Returns
    -------
    SufficientStatistics
        The tied (pooled) scatter is shared and therefore unchanged.
    """
    order = _check_order(order, stats.n_components)
    scatter = stats.scatter.copy() if stats.covariance_type == "tied" else stats.scatter[order]
    return SufficientStatistics(stats.covariance_type, stats.weights[order], stats.means[order], scatter)


def permute_params(params: GaussianParams, order: Sequence[int]) -> GaussianParams:
    """Parameters whose component ``i`` is component ``order[i]`` of ``params`` (a copy)."""
    order = _check_order(order, params.n_components)
    tied = params.covariance_type == "tied"

    def pick(a):
        if a is None:
            return None
        return a.copy() if tied else a[order]

    return GaussianParams(params.covariance_type, params.weights[order], params.means[order],
                          pick(params.covariances), pick(params.precisions_cholesky))


def _check_order(order, k_comp: int) -> np.ndarray:
    order = np.asarray(order, dtype=np.int64)
    if order.shape != (k_comp,) or not np.array_equal(np.sort(order), np.arange(k_comp)):
        raise ValueError(f"order must be a permutation of range({k_comp}), got {order.tolist()}")
    return order
