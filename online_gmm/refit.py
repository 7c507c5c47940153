"""Full-batch refits over candidate numbers of components, on the reservoir's sample of the stream.

The online model only ever sees each record once. To let the pipeline revisit its choices (the number
of components, a poor local optimum) the pipeline keeps a bounded sample of the stream
(:class:`~online_gmm.reservoir.Reservoir`) and refits on it:

:func:`refit`
    full-batch EM (:func:`online_gmm._batch.fit_em`) for every candidate K: the current K warm-started
    from the online parameters, K +- 1 from a split or merge of them (:func:`neighbour_start`), the
    others from fresh starts; BIC/AIC (scikit-learn's formulas, :func:`information_criteria`) and
    mean log-likelihood on the reservoir; the winner by a criterion; its statistics matched to the
    online model's components (stable ids) and rescaled to the online model's effective count.

The pieces around it live in their own modules and are re-exported here, so
``from online_gmm.refit import ...`` keeps working for every name of ``__all__``:

- :class:`Reservoir`: :mod:`online_gmm.reservoir`;
- :func:`match_components`, :func:`permute_statistics`, :func:`permute_params`,
  :func:`bhattacharyya_distances`, :class:`ComponentMatching`: :mod:`online_gmm._matching`;
- :class:`BICHistory`: :mod:`online_gmm.bic_history`;
- :func:`plot_history`, :func:`plot_components`: :mod:`online_gmm._refit_plots`.

No E-step, M-step or log-density is written here: everything goes through :class:`~online_gmm._em.Scorer`,
:func:`~online_gmm._batch.fit_em` and :class:`~online_gmm._suffstats.SufficientStatistics`.
"""

from __future__ import annotations

import math
import time as _time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from online_gmm._batch import fit_em
from online_gmm._em import EMResult, GaussianParams, Scorer
from online_gmm._gaussian import get_kernel
from online_gmm._matching import (
    ComponentMatching,
    _check_labels,
    _full_covariances,
    bhattacharyya_distances,
    match_components,
    permute_params,
    permute_statistics,
)
from online_gmm._refit_plots import plot_components, plot_history
from online_gmm._suffstats import SufficientStatistics
from online_gmm.bic_history import _CRITERIA, BICHistory
from online_gmm.model_spec import check_random_state
from online_gmm.reservoir import Reservoir

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
