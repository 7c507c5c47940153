"""Bounded reservoir of recent data, full-batch refits over candidate numbers of components, BIC history.

The online model only ever sees each record once. To let the pipeline revisit its choices (the number
of components, a poor local optimum) this module keeps a bounded sample of the stream and refits on it:

:class:`Reservoir`
    O(size) sample of the stream: uniform reservoir sampling (Vitter's Algorithm L, with skips, so a
    batch costs one copy plus one draw per *accepted* row) or a sliding window (ring buffer). Its whole
    state, including the generator, serialises to arrays plus JSON (no pickle), and a restored
    reservoir continues bit for bit.
:func:`refit`
    full-batch EM (:func:`online_gmm._batch.fit_em`) for every candidate K: the current K warm-started
    from the online parameters, the others from fresh starts; BIC/AIC (scikit-learn's formulas) and
    mean log-likelihood on the reservoir; the winner by a criterion; its statistics matched to the
    online model's components (stable ids) and rescaled to the online model's effective count.
:func:`match_components` / :func:`permute_statistics`
    component identity across refits (Hungarian assignment on Bhattacharyya distances).
:class:`BICHistory`, :func:`plot_history`, :func:`plot_components`
    the table of refits and optional matplotlib plots (``pip install online-gmm[plot]``).

No E-step, M-step or log-density is written here: everything goes through :class:`~online_gmm._em.Scorer`,
:func:`~online_gmm._batch.fit_em` and :class:`~online_gmm._suffstats.SufficientStatistics`.
"""

from __future__ import annotations

import json
import math
import time as _time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from online_gmm._batch import fit_em
from online_gmm._em import EMResult, GaussianParams, Scorer
from online_gmm._gaussian import get_kernel
from online_gmm._suffstats import SufficientStatistics
from online_gmm.model_spec import check_random_state

__all__ = [
    "Reservoir",
    "CandidateFit",
    "ComponentMatching",
    "RefitResult",
    "refit",
    "information_criteria",
    "bhattacharyya_distances",
    "match_components",
    "permute_statistics",
    "permute_params",
    "BICHistory",
    "plot_history",
    "plot_components",
]

_RESERVOIR_FORMAT = 2   # 2: acceptances drawn in blocks (a queue of drawn, not yet reached rows)
_MODES = ("reservoir", "window")
_CRITERIA = ("bic", "aic")


# ==================================================================================================
# Reservoir
# ==================================================================================================
class Reservoir:
    """A bounded sample of the stream: uniform reservoir sampling or a sliding window.

    Parameters
    ----------
    size : int
        Maximum number of rows kept (memory is ``size * n_features`` float64, allocated on the first
        :meth:`add`).
    mode : {'reservoir', 'window'}, default='reservoir'
        ``'reservoir'``: every row seen so far is in the sample with the same probability
        ``size / n_seen`` (Algorithm L: geometric skips; the accepted rows are drawn in vectorised
        blocks, three uniforms each, so a batch costs no Python loop per row or per accepted row).
        ``'window'``: the last ``size`` rows (ring buffer).
    seed : int, numpy.random.SeedSequence, numpy.random.Generator or None
        Seeds the :class:`numpy.random.Generator` used for sampling (ignored in window mode). A
        Generator passed here is used (and advanced) directly.

    Attributes
    ----------
    n_seen : int
        Rows offered to :meth:`add` so far.
    n_features : int or None
        Set by the first non-empty :meth:`add`.

    Examples
    --------
    >>> import numpy as np
    >>> from online_gmm.refit import Reservoir
    >>> res = Reservoir(100, seed=0)
    >>> res.add(np.arange(2000.0).reshape(1000, 2))
    >>> res.data().shape, res.n_seen
    ((100, 2), 1000)
    >>> arrays, meta = res.to_arrays()
    >>> clone = Reservoir.from_arrays(arrays, meta)
    >>> batch = np.ones((500, 2))
    >>> res.add(batch); clone.add(batch)
    >>> bool(np.array_equal(res.data(), clone.data()))
    True
    >>> win = Reservoir(3, mode="window")
    >>> win.add(np.arange(5.0)[:, None])
    >>> win.data().ravel()
    array([2., 3., 4.])
    """

    def __init__(self, size: int, mode: str = "reservoir",
                 seed: int | np.random.SeedSequence | np.random.Generator | None = None) -> None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"size must be an integer >= 1, got {size!r}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        self.size = int(size)
        self.mode = mode
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.n_seen = 0
        self.n_features: int | None = None
        self._buf: np.ndarray | None = None
        self._filled = 0
        self._head = 0               # window: next slot to write
        self._w = 0.0                # Algorithm L: W after the last drawn acceptance
        self._next = -1              # Algorithm L: global index of the first row not yet drawn
        self._queue_pos = np.empty(0, dtype=np.int64)   # drawn acceptances not yet reached
        self._queue_slot = np.empty(0, dtype=np.int64)

    # ------------------------------------------------------------------ public
    def __len__(self) -> int:
        return self._filled

    def add(self, X: np.ndarray) -> None:
        """Offer a batch of rows to the sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Copied; the caller's array is never kept.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D of shape (n_samples, n_features), got shape {X.shape}")
        n = X.shape[0]
        if n == 0:
            return
        if self.n_features is None:
            self.n_features = int(X.shape[1])
        elif X.shape[1] != self.n_features:
            raise ValueError(
                f"X has {X.shape[1]} features, but the reservoir holds {self.n_features}-feature rows")
        if self._buf is None:
            self._buf = np.empty((self.size, self.n_features))
        if self.mode == "window":
            self._add_window(X)
        else:
            self._add_reservoir(X)
        self.n_seen += n

    def data(self) -> np.ndarray:
        """A copy of the sample, shape (n_kept, n_features) (window mode: oldest row first).

        Returns an array of shape (0, 0) before anything was added.
        """
        if self._buf is None:
            return np.empty((0, 0))
        if self.mode == "window" and self._filled == self.size:
            return np.concatenate((self._buf[self._head:], self._buf[:self._head]))
        return self._buf[:self._filled].copy()

    # ------------------------------------------------------------------ sampling
    def _add_window(self, X: np.ndarray) -> None:
        buf, size, n = self._buf, self.size, X.shape[0]
        if n >= size:
            buf[:] = X[n - size:]
            self._head = 0
            self._filled = size
            return
        first = min(n, size - self._head)
        buf[self._head:self._head + first] = X[:first]
        buf[:n - first] = X[first:]
        self._head = (self._head + n) % size
        self._filled = min(size, self._filled + n)

    def _skips(self, w: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Algorithm L's geometric skips for the weights ``w`` from uniforms ``u`` in [0, 1)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            skip = np.floor(np.log1p(-u) / np.log1p(-w))
        skip = np.where(w >= 1.0, 0.0, skip)
        # W underflows to 0 only after astronomically many rows: nothing is accepted any more (a skip
        # is capped at 2^40 rows so that sums of a block of skips stay far from int64 overflow)
        skip = np.where((w <= 0.0) | ~np.isfinite(skip), float(1 << 40), skip)
        return np.minimum(skip, float(1 << 40)).astype(np.int64)

    def _extend_queue(self, end: int) -> None:
        """Draw accepted rows (global index and slot) until one lies at or beyond ``end``.

        Each accepted row takes three uniforms in order (its slot, the factor of W, the next skip),
        drawn in blocks: the sequence of accepted rows depends only on the generator's state, not on
        how the stream is cut into batches.
        """
        while self._next < end:
            # about size * ln(end / next) acceptances are expected before end
            c = min(1 << 16, 16 + int(1.2 * self.size * math.log(end / max(self._next, 1))))
            u = self.rng.random((c, 3))
            slots = np.minimum((u[:, 0] * self.size).astype(np.int64), self.size - 1)
            w = self._w * np.exp(np.cumsum(np.log1p(-u[:, 1])) / self.size)
            pos = self._next + np.concatenate(([0], np.cumsum(self._skips(w, u[:, 2])[:-1] + 1)))
            nxt = int(pos[-1]) + int(self._skips(w[-1:], u[-1:, 2])[0]) + 1
            self._queue_pos = np.concatenate((self._queue_pos, pos))
            self._queue_slot = np.concatenate((self._queue_slot, slots))
            self._w = float(w[-1])
            self._next = nxt

    def _add_reservoir(self, X: np.ndarray) -> None:
        buf, size, n = self._buf, self.size, X.shape[0]
        base = self.n_seen                      # global index of X[0]
        start = 0
        if self._filled < size:                 # fill phase: vectorised copy
            start = min(size - self._filled, n)
            buf[self._filled:self._filled + start] = X[:start]
            self._filled += start
            if self._filled == size:
                u = self.rng.random(2)
                self._w = float(np.exp(np.log1p(-u[0]) / size))
                self._next = size + int(self._skips(np.array([self._w]), u[1:])[0])
        end = base + n
        if start == n:
            return
        self._extend_queue(end)
        k = int(np.searchsorted(self._queue_pos, end))
        if k == 0:
            return
        rows = self._queue_pos[:k] - base
        slots = self._queue_slot[:k]
        self._queue_pos, self._queue_slot = self._queue_pos[k:], self._queue_slot[k:]
        # apply in one fancy assignment; where a slot is hit twice, the later row must win
        uniq, first = np.unique(slots[::-1], return_index=True)
        buf[uniq] = X[rows[::-1][first]]

    # ------------------------------------------------------------------ serialisation
    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Exact, pickle-free state.

        Returns
        -------
        arrays : dict of str to ndarray
            ``{"data": (n_kept, n_features) float64}`` in storage order (empty before the first add).
        meta : dict
            JSON-able: size, mode, counters, Algorithm L state and the generator's
            ``bit_generator.state`` (a dict of ints, exact through JSON).
        """
        arrays: dict[str, np.ndarray] = {"queue_pos": self._queue_pos.copy(),
                                         "queue_slot": self._queue_slot.copy()}
        if self._buf is not None:
            arrays["data"] = self._buf[:self._filled].copy()
        meta = {"format": _RESERVOIR_FORMAT, "size": self.size, "mode": self.mode,
                "n_seen": self.n_seen, "n_features": self.n_features, "filled": self._filled,
                "head": self._head, "w": self._w, "next": self._next,
                "rng": _jsonable(self.rng.bit_generator.state)}
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> "Reservoir":
        """Inverse of :meth:`to_arrays`; the restored reservoir continues bit for bit."""
        if meta.get("format") != _RESERVOIR_FORMAT:
            raise ValueError(
                f"unsupported reservoir format {meta.get('format')!r}, expected {_RESERVOIR_FORMAT}")
        state = meta["rng"]
        try:
            bit_gen = getattr(np.random, state["bit_generator"])()
        except (AttributeError, KeyError, TypeError):
            raise ValueError(f"unknown bit generator in reservoir state: {state!r}") from None
        bit_gen.state = state
        res = cls(meta["size"], meta["mode"], seed=np.random.Generator(bit_gen))
        res.n_seen = int(meta["n_seen"])
        res.n_features = None if meta["n_features"] is None else int(meta["n_features"])
        res._filled = int(meta["filled"])
        res._head = int(meta["head"])
        res._w = float(meta["w"])
        res._next = int(meta["next"])
        res._queue_pos = np.asarray(arrays["queue_pos"], dtype=np.int64).reshape(-1)
        res._queue_slot = np.asarray(arrays["queue_slot"], dtype=np.int64).reshape(-1)
        if res._queue_pos.shape != res._queue_slot.shape:
            raise ValueError("reservoir queue arrays differ in length")
        if res.n_features is not None:
            data = np.asarray(arrays["data"], dtype=np.float64)
            if data.shape != (res._filled, res.n_features) or res._filled > res.size:
                raise ValueError(
                    f"reservoir data has shape {data.shape}, expected {(res._filled, res.n_features)} "
                    f"with at most size={res.size} rows")
            res._buf = np.empty((res.size, res.n_features))
            res._buf[:res._filled] = data
        return res

    def __repr__(self) -> str:
        return (f"Reservoir(size={self.size}, mode={self.mode!r}, n_seen={self.n_seen}, "
                f"n_kept={self._filled})")


def _jsonable(obj: Any) -> Any:
    """Plain Python containers and scalars (numpy ints and floats converted)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ==================================================================================================
# Component matching
# ==================================================================================================
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


# ==================================================================================================
# Refit
# ==================================================================================================
def information_criteria(X: np.ndarray, params: GaussianParams) -> dict[str, float]:
    """BIC, AIC and mean log-likelihood of ``params`` on ``X`` (scikit-learn's formulas).

    ``bic = -2 * sum(log p) + p * log(n)``, ``aic = -2 * sum(log p) + 2 * p``, with ``p``
    :meth:`GaussianParams.n_parameters`.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    params : GaussianParams

    Returns
    -------
    dict
        ``{"bic": float, "aic": float, "loglik": float}`` (``loglik`` is the mean per sample).
    """
    n = X.shape[0]
    ll_sum = float(Scorer(params).score_samples(X).sum())
    p = params.n_parameters()
    return {"bic": -2.0 * ll_sum + p * math.log(n), "aic": -2.0 * ll_sum + 2.0 * p,
            "loglik": ll_sum / n}


@dataclass
class CandidateFit:
    """One candidate of a refit: its EM result and scores on the reservoir."""

    k: int
    bic: float
    aic: float
    loglik: float
    warm_start: bool
    result: EMResult = field(repr=False)

    @property
    def n_iter(self) -> int:
        return self.result.n_iter

    @property
    def converged(self) -> bool:
        return self.result.converged

    def row(self) -> dict[str, Any]:
        return {"k": self.k, "bic": self.bic, "aic": self.aic, "loglik": self.loglik,
                "n_iter": self.n_iter, "converged": self.converged, "warm_start": self.warm_start}


@dataclass
class RefitResult:
    """The outcome of :func:`refit`.

    Attributes
    ----------
    chosen_k : int
    criterion : str
    candidates : list of CandidateFit
        In the order of the ``candidates`` argument.
    stats : SufficientStatistics
        The winner's statistics, permuted by ``matching.order`` and rescaled to the online model's
        effective count (its ``total_weight``).
    params : GaussianParams
        ``stats.to_params(reg_covar)``: exactly what the online model recomputes from ``stats``.
    matching : ComponentMatching
        Component ids after the refit (``matching.labels[i]`` is the stable id of component ``i``).
    row : dict
        The JSON-able history row ``{"n_seen", "time", "candidates": [{"k", "bic", "aic", "loglik",
        ...}], "chosen_k", "criterion", "labels", "duration"}``.
    """

    chosen_k: int
    criterion: str
    candidates: list[CandidateFit]
    stats: SufficientStatistics
    params: GaussianParams
    matching: ComponentMatching
    row: dict[str, Any]

    def apply_to(self, online) -> None:
        """Install the result into an :class:`~online_gmm._online.OnlineEM` (its clock is kept).

        Sets ``online.n_components`` to ``chosen_k`` and calls ``online.set_state``.
        """
        online.n_components = self.chosen_k
        online.set_state(self.stats, self.params, online.t)


def _check_candidates(candidates: Iterable[int], n: int) -> list[int]:
    try:
        cands = [int(k) for k in candidates]
    except (TypeError, ValueError):
        raise ValueError(f"candidates must be a list of ints, got {candidates!r}") from None
    if not cands or any(k < 1 for k in cands) or len(set(cands)) != len(cands):
        raise ValueError(f"candidates must be a non-empty list of distinct ints >= 1, got {cands}")
    if max(cands) > n:
        raise ValueError(
            f"the reservoir holds {n} rows, fewer than the largest candidate K={max(cands)}")
    return cands


def neighbour_start(X: np.ndarray, params: GaussianParams, k: int, reg_covar: float) -> GaussianParams | None:
    """Starting parameters for ``k`` = current K +- 1, made from the current mixture (split or merge).

    Each row of ``X`` goes to its most responsible component; for K + 1 the component with the most
    spread (weight times the trace of its covariance) is cut in two by the hyperplane through its
    mean normal to its principal axis, for K - 1 the two closest components (Bhattacharyya) are
    joined; the start is the M-step of that labelling, as :func:`~online_gmm._init.initial_params`
    makes it from k-means labels.  A split/merge start is what SMEM (Ueda et al., 2000, Neural
    Computation 12:2109-2128) tries; here it replaces the ``n_init`` k-means starts of the
    neighbouring candidates: no k-means, and EM starts next to the current optimum.

    Returns
    -------
    GaussianParams or None
        None where the labelling leaves a component with fewer than two rows (the caller then falls
        back to fresh starts).
    """
    kc = params.n_components
    if abs(k - kc) != 1 or k < 1:
        return None
    labels = Scorer(params).log_resp(X)[0].argmax(axis=1)
    if k == kc + 1:
        covs = _full_covariances(params)
        spread = params.weights * np.trace(covs, axis1=1, axis2=2)
        j = int(np.argmax(spread))
        axis = np.linalg.eigh(covs[j])[1][:, -1]
        labels = labels.copy()
        labels[(labels == j) & ((X - params.means[j]) @ axis > 0)] = kc
    else:
        dist = bhattacharyya_distances(params, params)
        np.fill_diagonal(dist, np.inf)
        a, b = sorted(np.unravel_index(int(np.argmin(dist)), dist.shape))
        labels = np.where(labels == b, a, labels)
        labels = labels - (labels > b)
    counts = np.bincount(labels, minlength=k)
    if counts.min() < 2:
        return None
    resp = np.zeros((X.shape[0], k))
    resp[np.arange(X.shape[0]), labels] = 1.0
    stats = SufficientStatistics.from_resp(X, resp, covariance_type=params.covariance_type)
    cov = stats.covariances(reg_covar)
    weights = (stats.weights + 10 * np.finfo(float).eps) / X.shape[0]
    return GaussianParams(params.covariance_type, weights, stats.means, cov,
                          get_kernel(params.covariance_type).precision_cholesky(cov))


def refit(X: np.ndarray, stats: SufficientStatistics | None, candidates: Sequence[int], *,
          covariance_type: str, reg_covar: float = 1e-6, tol: float = 1e-3, max_iter: int = 100,
          n_init: int = 1, rng: int | np.random.RandomState | None = None,
          params: GaussianParams | None = None, current_K: int | None = None,
          criterion: str = "bic", init_params: str = "kmeans", warm_start: bool = True,
          neighbour_starts: bool = True, labels: Sequence[int] | None = None,
          next_label: int | None = None, n_seen: int | None = None,
          time: float | None = None) -> RefitResult:
    """Full-batch EM on the reservoir for every candidate number of components; pick the best.

    The current K is warm-started from the online parameters (a single :func:`fit_em` run with
    ``start=params``); with ``neighbour_starts`` the candidates K +- 1 start from a split or merge of
    the online mixture (:func:`neighbour_start`, one run each); every other candidate runs
    :func:`fit_em` from ``n_init`` fresh starts (``init_params``). Each fitted candidate is scored on ``X`` with :func:`information_criteria`
    and the one minimising ``criterion`` wins (ties: the smaller K).

    The winner is then made a drop-in replacement for the online state:

    * ids: a warm-started winner keeps the online order (it is the same components, continued);
      otherwise :func:`match_components` puts matched components at their old positions
      (see :class:`ComponentMatching` for the policy when K grows or shrinks);
    * memory: its statistics (weight ``n`` on the reservoir) are scaled to ``stats.total_weight``,
      so the online model keeps the same effective memory length.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        The reservoir's data (:meth:`Reservoir.data`).
    stats : SufficientStatistics or None
        The online model's statistics (``OnlineEM.stats``); None when there is no online model yet
        (no warm start, no matching, no rescaling).
    candidates : sequence of int
        Numbers of components to try, distinct, each <= n_samples.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    reg_covar, tol, max_iter, n_init, init_params
        As in :class:`~online_gmm.estimator.OnlineGaussianMixture`.
    rng : int, numpy.random.RandomState or None
        For the fresh starts.
    params : GaussianParams, optional
        The online parameters for the warm start (default ``stats.to_params(reg_covar)``, which is
        what :class:`~online_gmm._online.OnlineEM` holds).
    current_K : int, optional
        Default ``stats.n_components``. Warm-started if it is among the candidates.
    criterion : {'bic', 'aic'}, default='bic'
    warm_start : bool, default=True
        False: every candidate, the current K included, starts fresh (e.g. to escape a poor local
        optimum of the online model); the winner is then always placed by :func:`match_components`.
    neighbour_starts : bool, default=True
        With ``warm_start``: K +- 1 start from a split/merge of the online mixture instead of
        ``n_init`` k-means starts (a refit of K in {3, 4, 5} on 5000 rows took about half the time);
        one falls back to fresh starts where the split or merge leaves a component under two rows.
    labels, next_label : optional
        Stable ids of the online components, from the previous result's ``matching``.
    n_seen : int, optional
        Stream position recorded in the history row.
    time : float, optional
        Timestamp recorded in the row (default ``time.time()``).

    Returns
    -------
    RefitResult

    Examples
    --------
    >>> import numpy as np
    >>> from online_gmm.refit import refit
    >>> rng = np.random.RandomState(0)
    >>> X = np.vstack([rng.normal(-5, 1, (200, 2)), rng.normal(5, 1, (200, 2))])
    >>> out = refit(X, None, [1, 2, 3], covariance_type="full", rng=0, n_seen=400, time=0.0)
    >>> out.chosen_k, sorted(out.row)
    (2, ['candidates', 'chosen_k', 'criterion', 'duration', 'labels', 'n_seen', 'time'])
    """
    t_start = _time.perf_counter()
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a non-empty 2-D array (n_samples, n_features), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinity")
    get_kernel(covariance_type)
    if criterion not in _CRITERIA:
        raise ValueError(f"criterion must be one of {_CRITERIA}, got {criterion!r}")
    cands = _check_candidates(candidates, X.shape[0])
    rng = check_random_state(rng)
    if stats is not None:
        if stats.covariance_type != covariance_type or stats.n_features != X.shape[1]:
            raise ValueError(
                f"online statistics ({stats.covariance_type!r}, {stats.n_features} features) do not "
                f"match covariance_type={covariance_type!r} and X with {X.shape[1]} features")
        if params is None:
            params = stats.to_params(reg_covar)
        if current_K is None:
            current_K = stats.n_components
        if params.n_components != current_K:
            raise ValueError(
                f"current_K={current_K} but the online parameters have {params.n_components} components")

    fits: list[CandidateFit] = []
    failed: list[str] = []
    for k in cands:
        warm = warm_start and params is not None and k == current_K
        try:
            start = params if warm else None
            if start is None and warm_start and neighbour_starts and params is not None:
                start = neighbour_start(X, params, k, reg_covar)
            result = fit_em(X, n_components=k, covariance_type=covariance_type, init_params=init_params,
                            n_init=n_init, rng=rng, reg_covar=reg_covar, tol=tol, max_iter=max_iter,
                            start=start)
            if result.stats is None:  # max_iter == 0: statistics under the starting parameters
                result.stats, _ = Scorer(result.params).expected_statistics(X)
                result.params = result.stats.to_params(reg_covar)
            crit = information_criteria(X, result.params)
        except ValueError as exc:   # an ill-defined fit for this K: the other candidates still count
            failed.append(f"K={k}: {exc}")
            continue
        fits.append(CandidateFit(k, crit["bic"], crit["aic"], crit["loglik"], warm, result))
    if not fits:
        raise ValueError("every candidate's fit failed: " + "; ".join(failed))

    best = min(fits, key=lambda f: (getattr(f, criterion), f.k))
    new_stats = best.result.stats
    if stats is None:
        matching = ComponentMatching(np.arange(best.k), np.arange(best.k), np.empty(0, dtype=np.int64),
                                     best.k)
    elif best.warm_start:
        lab, nxt = _check_labels(labels, next_label, stats.n_components)
        matching = ComponentMatching(np.arange(best.k), lab, np.arange(best.k), nxt)
    else:
        matching = match_components(params, best.result.params, labels=labels, next_label=next_label)
    new_stats = permute_statistics(new_stats, matching.order)
    if stats is not None and stats.total_weight > 0 and new_stats.total_weight > 0:
        new_stats = new_stats.scale(stats.total_weight / new_stats.total_weight)
    new_params = new_stats.to_params(reg_covar)

    row = {"n_seen": None if n_seen is None else int(n_seen),
           "time": float(_time.time() if time is None else time),
           "candidates": [f.row() for f in fits], "chosen_k": best.k, "criterion": criterion,
           "labels": matching.labels.tolist(),
           "duration": _time.perf_counter() - t_start}
    return RefitResult(best.k, criterion, fits, new_stats, new_params, matching, row)


# ==================================================================================================
# History and plots
# ==================================================================================================
class BICHistory:
    """The rows of the refits, JSON-able, in order: the most recent ``max_rows`` of them.

    A job that runs for months refits thousands of times; its checkpoint keeps the latest
    ``max_rows`` rows (the report's K-over-time panel reads the job's bounded timeline for the rest),
    and counts the older ones in ``dropped`` so the refit numbers of :meth:`table` stay those of the
    whole job.

    Parameters
    ----------
    rows : iterable of dict, optional
    max_rows : int, default=1000
    dropped : int, default=0
        Rows dropped before these (restored from a checkpoint).

    Examples
    --------
    >>> from online_gmm.refit import BICHistory
    >>> h = BICHistory()
    >>> h.append({"n_seen": 1000, "time": 0.0, "chosen_k": 2,
    ...           "candidates": [{"k": 1, "bic": 250.0, "aic": 240.0, "loglik": -1.2},
    ...                          {"k": 2, "bic": 200.5, "aic": 180.0, "loglik": -0.9}]})
    >>> print(h.table())
    refit  n_seen  chosen_k  bic[k=1]   bic[k=2]
        0    1000         2     250.0      200.5*
    >>> BICHistory.from_json(h.to_json()).rows == h.rows
    True
    >>> short = BICHistory(h.rows * 3, max_rows=2)
    >>> len(short), short.dropped
    (2, 1)
    """

    def __init__(self, rows: Iterable[dict[str, Any]] = (), *, max_rows: int = 1000, dropped: int = 0) -> None:
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ValueError(f"max_rows must be an integer >= 1, got {max_rows!r}")
        self.max_rows = max_rows
        self.dropped = int(dropped)
        self.rows: list[dict[str, Any]] = []
        for r in rows:
            self.append(r)

    def append(self, row: dict[str, Any]) -> None:
        """Append a row (a JSON round-tripped copy, so it is checked to be JSON-able); past
        ``max_rows`` rows the oldest is dropped."""
        if not isinstance(row, dict) or "candidates" not in row or "chosen_k" not in row:
            raise ValueError(f"a history row must be a dict with 'candidates' and 'chosen_k', got {row!r}")
        self.rows.append(json.loads(json.dumps(_jsonable(row))))
        if len(self.rows) > self.max_rows:
            del self.rows[0]
            self.dropped += 1

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def to_json(self) -> str:
        return json.dumps(self.rows)

    @classmethod
    def from_json(cls, text: str) -> "BICHistory":
        return cls(json.loads(text))

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Checkpoint form (no arrays; the rows go into the metadata)."""
        return {}, {"rows": json.loads(self.to_json()), "dropped": self.dropped, "max_rows": self.max_rows}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> "BICHistory":
        # checkpoints written before the history was bounded hold neither "dropped" nor "max_rows"
        return cls(meta["rows"], max_rows=max(int(meta.get("max_rows", 1000)), len(meta["rows"]), 1),
                   dropped=int(meta.get("dropped", 0)))

    def table(self, criterion: str | None = None) -> str:
        """A plain-text table: one line per refit, one column per K; ``*`` marks the chosen K.

        Parameters
        ----------
        criterion : {'bic', 'aic'}, optional
            Column values (default: each row's own criterion, else BIC).
        """
        if criterion is not None and criterion not in _CRITERIA:
            raise ValueError(f"criterion must be one of {_CRITERIA}, got {criterion!r}")
        ks = sorted({c["k"] for r in self.rows for c in r["candidates"]})
        crit = criterion or (self.rows[-1].get("criterion", "bic") if self.rows else "bic")
        header = ["refit", "n_seen", "chosen_k"] + [f"{crit}[k={k}] " for k in ks]
        lines = [header]
        for i, r in enumerate(self.rows, start=self.dropped):
            by_k = {c["k"]: c for c in r["candidates"]}
            cells = [str(i), "-" if r.get("n_seen") is None else str(r["n_seen"]), str(r["chosen_k"])]
            for k in ks:
                if k in by_k:
                    cells.append(f"{by_k[k][crit]:.1f}" + ("*" if k == r["chosen_k"] else " "))
                else:
                    cells.append("- ")
            lines.append(cells)
        widths = [max(len(line[j]) for line in lines) for j in range(len(header))]
        out = ["  ".join(cell.rjust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
        return "\n".join(out)


def _pyplot(func: str):
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(
            f"{func} needs matplotlib: install it with `pip install online-gmm[plot]`") from exc
    return plt


def plot_history(history: BICHistory | Sequence[dict[str, Any]], ax=None, *, criterion: str = "bic",
                 relative: bool = True):
    """Plot the criterion of every candidate K across refits; the chosen K is circled.

    Parameters
    ----------
    history : BICHistory or list of rows
    ax : matplotlib Axes, optional
    criterion : {'bic', 'aic', 'loglik'}
    relative : bool, default=True
        For 'bic' and 'aic', plot each candidate's difference to the best candidate of the same refit
        (symlog scale): the raw values drift with the reservoir's contents, the differences say which
        K the data supports.

    Returns
    -------
    matplotlib Axes
    """
    plt = _pyplot("plot_history")
    if ax is None:
        _, ax = plt.subplots()
    rows = history.rows if isinstance(history, BICHistory) else list(history)
    relative = relative and criterion in ("bic", "aic")
    xs = [r["n_seen"] if r.get("n_seen") is not None else i for i, r in enumerate(rows)]
    best = [min(c[criterion] for c in r["candidates"]) if relative else 0.0 for r in rows]

    def value(c, b):
        return c[criterion] - b

    ks = sorted({c["k"] for r in rows for c in r["candidates"]})
    for k in ks:
        pts = [(x, value(c, b)) for x, r, b in zip(xs, rows, best) for c in r["candidates"] if c["k"] == k]
        if pts:
            ax.plot(*zip(*pts), marker=".", label=f"K={k}")
    chosen = [(x, value(c, b)) for x, r, b in zip(xs, rows, best) for c in r["candidates"]
              if c["k"] == r["chosen_k"]]
    if chosen:
        ax.scatter(*zip(*chosen), s=80, facecolors="none", edgecolors="k", label="chosen", zorder=3)
    ax.set_xlabel("records seen" if any(r.get("n_seen") is not None for r in rows) else "refit")
    name = criterion.upper() if criterion != "loglik" else "mean log-likelihood"
    if relative:
        ax.set_yscale("symlog", linthresh=10.0)
        ax.set_ylabel(f"{name} - best {name} at that refit")
    else:
        ax.set_ylabel(name)
    if ks:
        ax.legend()
    return ax


def plot_components(params: GaussianParams, X_sample: np.ndarray | None = None, ax=None, *,
                    features: tuple[int, int] = (0, 1), n_std: float = 2.0):
    """Scatter a data sample and draw each component's ``n_std`` ellipse on two features.

    Parameters
    ----------
    params : GaussianParams
    X_sample : ndarray of shape (n_samples, n_features), optional
    ax : matplotlib Axes, optional
    features : (int, int)
        The two features plotted (a 1-feature model is plotted against zero).
    n_std : float

    Returns
    -------
    matplotlib Axes
    """
    plt = _pyplot("plot_components")
    from matplotlib.patches import Ellipse

    if ax is None:
        _, ax = plt.subplots()
    d = params.n_features
    i, j = features if d > 1 else (0, 0)
    if X_sample is not None and len(X_sample):
        Xs = np.asarray(X_sample, dtype=np.float64)
        ax.scatter(Xs[:, i], Xs[:, j] if d > 1 else np.zeros(len(Xs)), s=4, alpha=0.4, color="0.5")
    covs = _full_covariances(params)
    for k in range(params.n_components):
        sub = covs[k][np.ix_([i, j], [i, j])] if d > 1 else np.diag([covs[k][0, 0], 0.0])
        vals, vecs = np.linalg.eigh(sub)
        vals = np.maximum(vals, 0.0)
        angle = float(np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1])))
        centre = (params.means[k, i], params.means[k, j] if d > 1 else 0.0)
        ax.add_patch(Ellipse(centre, 2 * n_std * math.sqrt(vals[-1]), 2 * n_std * math.sqrt(vals[0]),
                             angle=angle, fill=False, lw=1.5, color=f"C{k % 10}"))
        ax.annotate(str(k), centre, ha="center", va="center")
    ax.autoscale_view()
    return ax
