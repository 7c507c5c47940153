"""Optional matplotlib plots of the refits: the criterion across refits and the components' ellipses.

:func:`plot_history`, :func:`plot_components` (``pip install online-gmm[plot]``; matplotlib is
imported at the first call). Moved here from :mod:`online_gmm.refit`, which still exports them.
The job's report figures are drawn by :mod:`online_gmm.plots`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from online_gmm._em import GaussianParams
from online_gmm._matching import _full_covariances
from online_gmm.bic_history import BICHistory

__all__ = ["plot_history", "plot_components"]


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
