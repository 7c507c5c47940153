"""Pictures of a job that a person reads at a glance (matplotlib; ``pip install online-gmm[plot]``).

The same functions draw the PNG of ``online-gmm plot`` and the SVG figures of ``online-gmm report``:

- :func:`draw_plane`: the components in the plane of the two directions that separate them best
  (:func:`discriminant_directions`), with a sample of the stream and the flagged anomalies;
- :func:`draw_pairs`: every pair of features (D <= 6), the same marks;
- :func:`draw_k`: the number of components chosen at each refit and the criterion's margin over the
  runner-up (how sure the choice was);
- :func:`draw_timeline`: the anomaly rate and the mean log-likelihood over the stream.

Colours mean one thing each: a component has one colour (by its stable id, the ``cluster`` of the
score records) in every panel; anomalies are red crosses; the sample is grey; the K panels use no
per-K colours at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = ["ModelView", "discriminant_directions", "draw_plane", "draw_pairs", "draw_k",
           "draw_timeline", "overview_figure", "component_color", "MAX_PAIR_FEATURES"]

#: the pairwise grid is drawn up to this many features
MAX_PAIR_FEATURES = 6
#: with more refits than this, the K panels draw the timeline's (one point per entry)
MAX_REFITS_DRAWN = 300
_ANOMALY = "#d62728"
_SAMPLE = "0.62"


@dataclass
class ModelView:
    """Everything the pictures show, gathered from a checkpoint (:mod:`online_gmm.report`).

    Attributes
    ----------
    weights : ndarray of shape (n_components,)
    means : ndarray of shape (n_components, n_features)
    covariances : ndarray of shape (n_components, n_features, n_features)
    labels : list of int
        Stable id of each component (the ``cluster`` field of the score records).
    feature_names : list of str
    sample : ndarray of shape (n_samples, n_features)
        The refit reservoir (flagged records are kept out of it).
    flagged : ndarray of shape (n_flagged, n_features)
        The most recent flagged records.
    bic_rows : list of dict
        The BIC history.
    timeline : dict of lists
        :meth:`online_gmm.timeline.Timeline.columns` plus ``mean_loglik`` and ``anomaly_rate``.
    counters : dict
    quantile : float or None
        The anomaly threshold's quantile (the expected share flagged is ``1 - quantile``).
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    labels: list[int]
    feature_names: list[str]
    sample: np.ndarray
    flagged: np.ndarray
    bic_rows: list[dict[str, Any]] = field(default_factory=list)
    timeline: dict[str, list[Any]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    quantile: float | None = None

    @property
    def n_features(self) -> int:
        return int(self.means.shape[1])

    def title(self) -> str:
        """One line: K, features, records, flagged and rejected."""
        c = self.counters
        good, flagged = c.get("good", 0), c.get("anomalies", 0)
        share = f" ({flagged / good:.2%})" if good else ""
        return (f"K = {len(self.weights)} components on {self.n_features} features · "
                f"{good:,} good records · {flagged:,} flagged{share} · {c.get('rejected', 0):,} rejected")


def component_color(label: int) -> str:
    """The colour of the component with stable id ``label`` (tab10, cycled; red is left to the
    anomalies)."""
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
               "#bcbd22", "#7f7f7f", "#393b79"]
    return palette[int(label) % len(palette)]


def discriminant_directions(weights: np.ndarray, means: np.ndarray,
                            covariances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two directions along which the components are best told apart (Fisher's criterion).

    The generalised eigenvectors of the between-component scatter ``B = sum_k w_k (mu_k - mu)(mu_k
    - mu)^T`` against the pooled within-component covariance ``W = sum_k w_k Sigma_k``: the first
    maximises the spread of the means relative to the spread inside the components, the second does
    the same among directions uncorrelated with the first under ``W``. With fewer than three
    components ``B`` has rank one; the second direction is then the one of largest pooled variance
    ``W`` uncorrelated with the first.  Computed from the fitted parameters only.

    Parameters
    ----------
    weights : ndarray of shape (n_components,)
    means : ndarray of shape (n_components, n_features)
    covariances : ndarray of shape (n_components, n_features, n_features)

    Returns
    -------
    directions : ndarray of shape (n_features, min(2, n_features))
        Unit-length columns (largest loading positive): the plot's coordinates are ``X @ directions``.
    separation : ndarray of shape (min(2, n_features),)
        Fisher's ratio (between / within variance) along each direction.

    Examples
    --------
    >>> w = np.array([0.5, 0.5]); mu = np.array([[0.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    >>> cov = np.stack([np.diag([1.0, 1.0, 9.0])] * 2)
    >>> v, sep = discriminant_directions(w, mu, cov)
    >>> np.round(np.abs(v), 6).T.tolist(), np.round(sep, 6).tolist()
    ([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [4.0, 0.0])
    """
    from scipy.linalg import eigh

    w = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    mu = np.asarray(means, dtype=np.float64)
    d = mu.shape[1]
    centred = mu - w @ mu
    between = (centred * w[:, None]).T @ centred
    within = np.einsum("k,kij->ij", w, np.asarray(covariances, dtype=np.float64))
    within = 0.5 * (within + within.T) + 1e-12 * np.trace(within) / d * np.eye(d)
    vals, vecs = eigh(between, within)
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    n_dir = min(2, d)
    out = vecs[:, :n_dir].copy()
    if d >= 2 and vals[1] <= 1e-9 * max(vals[0], 1e-300):
        # rank one: among directions W-uncorrelated with the first, the one of largest variance
        first = out[:, 0]
        wf = within @ first
        proj = np.eye(d) - np.outer(wf, wf) / (wf @ wf)        # removes the part along W v1
        m = proj @ within @ proj.T
        _, evecs = np.linalg.eigh(0.5 * (m + m.T))
        out[:, 1] = evecs[:, -1]
    out /= np.linalg.norm(out, axis=0)
    for j in range(n_dir):
        if out[np.argmax(np.abs(out[:, j])), j] < 0:
            out[:, j] *= -1
    sep = np.array([(out[:, j] @ between @ out[:, j]) / (out[:, j] @ within @ out[:, j])
                    for j in range(n_dir)])
    return out, np.maximum(sep, 0.0)


def _axis_label(name: str, direction: np.ndarray, features: Sequence[str], sep: float) -> str:
    order = np.argsort(np.abs(direction))[::-1][:3]
    terms = []
    for i in order:
        if abs(direction[i]) < 0.005:
            continue
        sign = "-" if direction[i] < 0 else "+"
        terms.append(f"{sign} {abs(direction[i]):.2f}·{features[i]}")
    text = " ".join(terms).lstrip("+ ")
    more = " + …" if len(direction) > 3 else ""
    return f"{name} = {text}{more}   (separation {sep:.1f})"


def _limits(points: np.ndarray, centres: np.ndarray, spans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame: the sample's 0.5-99.5 percentiles and every component's ellipse, with a margin."""
    lo = centres - spans
    hi = centres + spans
    if len(points):
        lo = np.vstack([lo, np.percentile(points, 0.5, axis=0)])
        hi = np.vstack([hi, np.percentile(points, 99.5, axis=0)])
    lo, hi = lo.min(axis=0), hi.max(axis=0)
    pad = 0.05 * np.maximum(hi - lo, 1e-12)
    return lo - pad, hi + pad


def _ellipse(ax: Any, centre: np.ndarray, cov2: np.ndarray, color: str, n_std: float = 2.0,
             lw: float = 1.8) -> None:
    from matplotlib.patches import Ellipse

    vals, vecs = np.linalg.eigh(cov2)
    vals = np.maximum(vals, 0.0)
    angle = float(np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1])))
    ax.add_patch(Ellipse(tuple(centre), 2 * n_std * math.sqrt(vals[-1]), 2 * n_std * math.sqrt(vals[0]),
                         angle=angle, fill=False, lw=lw, color=color, zorder=3))


def _scatter_marks(ax: Any, sample: np.ndarray, flagged: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                   size: float = 5.0) -> None:
    if len(sample):
        ax.scatter(sample[:, 0], sample[:, 1], s=size, color=_SAMPLE, alpha=0.45, lw=0,
                   rasterized=True, zorder=1, label="sample of the stream")
    if len(flagged):
        clipped = np.clip(flagged, lo, hi)     # far-off anomalies are drawn at the frame's edge
        ax.scatter(clipped[:, 0], clipped[:, 1], s=3 * size + 6, marker="x", color=_ANOMALY, lw=1.0,
                   zorder=2, label="flagged anomaly")


def _project(view: ModelView, directions: np.ndarray):
    d2 = directions.shape[1]
    pad = (lambda a: a) if d2 == 2 else (lambda a: np.column_stack([a, np.zeros(len(a))]))
    means = pad(view.means @ directions)
    covs = np.einsum("di,kde,ej->kij", directions, view.covariances, directions)
    if d2 == 1:
        covs = np.stack([np.diag([c[0, 0], 0.0]) for c in covs])
    sample = pad(view.sample @ directions) if len(view.sample) else np.empty((0, 2))
    flagged = pad(view.flagged @ directions) if len(view.flagged) else np.empty((0, 2))
    return means, covs, sample, flagged


def draw_plane(ax: Any, view: ModelView) -> None:
    """The components (2-standard-deviation ellipses, labelled with their id and weight) in the
    plane of :func:`discriminant_directions`, over the sample, with the flagged anomalies."""
    directions, sep = discriminant_directions(view.weights, view.means, view.covariances)
    means, covs, sample, flagged = _project(view, directions)
    spans = 2.0 * np.sqrt(np.maximum(np.diagonal(covs, axis1=1, axis2=2), 0.0))
    lo, hi = _limits(sample, means, spans)
    _scatter_marks(ax, sample, flagged, lo, hi)
    for k, label in enumerate(view.labels):
        color = component_color(label)
        _ellipse(ax, means[k], covs[k], color)
        ax.annotate(f"{label}  ({view.weights[k]:.0%})", means[k], ha="center", va="center",
                    fontsize=9, fontweight="bold", color=color, zorder=4,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": color, "alpha": 0.85})
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    names = view.feature_names
    ax.set_xlabel(_axis_label("LD1", directions[:, 0], names, sep[0]), fontsize=8)
    if directions.shape[1] > 1:
        ax.set_ylabel(_axis_label("LD2", directions[:, 1], names, sep[1]), fontsize=8)
    ax.set_title("Components in the plane that separates them best\n"
                 "(ellipses: 2 standard deviations; label: component id and weight)", fontsize=10)
    ax.legend(loc="best", fontsize=8, markerscale=2, framealpha=0.85)


def draw_pairs(fig: Any, view: ModelView) -> None:
    """Every pair of features (lower triangle) and each feature's histogram (diagonal), with the
    components' 2-standard-deviation ellipses and the flagged anomalies. Needs D <= 6."""
    d = view.n_features
    if d > MAX_PAIR_FEATURES:
        raise ValueError(f"the pairwise grid is drawn for at most {MAX_PAIR_FEATURES} features, got {d}")
    # spacing set here, no layout engine: a grid of up to 36 small axes costs seconds to lay out
    axes = fig.subplots(d, d, squeeze=False, gridspec_kw={
        "left": 0.1, "right": 0.98, "bottom": 0.08, "top": 0.9, "wspace": 0.08, "hspace": 0.08})
    spans = 2.0 * np.sqrt(np.maximum(np.diagonal(view.covariances, axis1=1, axis2=2), 0.0))
    lo, hi = _limits(view.sample, view.means, spans)
    names = view.feature_names
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            if i == j:
                if len(view.sample):
                    ax.hist(np.clip(view.sample[:, i], lo[i], hi[i]), bins=40, range=(lo[i], hi[i]),
                            color=_SAMPLE, alpha=0.8)
                for k, label in enumerate(view.labels):
                    ax.axvline(view.means[k, i], color=component_color(label), lw=1.5)
                ax.set_xlim(lo[i], hi[i])
                ax.set_yticks([])
            else:
                idx = [j, i]
                sub_s = view.sample[:, idx] if len(view.sample) else np.empty((0, 2))
                sub_f = view.flagged[:, idx] if len(view.flagged) else np.empty((0, 2))
                _scatter_marks(ax, sub_s, sub_f, lo[idx], hi[idx], size=3.0)
                for k, label in enumerate(view.labels):
                    _ellipse(ax, view.means[k, idx], view.covariances[k][np.ix_(idx, idx)],
                             component_color(label), lw=1.2)
                ax.set_xlim(lo[j], hi[j])
                ax.set_ylim(lo[i], hi[i])
            ax.tick_params(labelsize=7)
            if i == d - 1:
                ax.set_xlabel(names[j], fontsize=8)
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(names[i], fontsize=8)
            elif j > 0:
                ax.set_yticklabels([])
    handles = _legend_handles(view)
    fig.legend(handles=handles, loc="upper right", bbox_to_anchor=(0.98, 0.86), fontsize=8,
               frameon=False)       # in the empty upper triangle
    fig.suptitle("Every pair of features (diagonal: histogram of the sample, lines: component means)",
                 fontsize=10)


def _legend_handles(view: ModelView) -> list[Any]:
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=component_color(label), lw=2,
                      label=f"component {label} ({view.weights[k]:.0%})")
               for k, label in enumerate(view.labels)]
    handles.append(Line2D([], [], color=_ANOMALY, marker="x", lw=0, label="flagged anomaly"))
    handles.append(Line2D([], [], color=_SAMPLE, marker="o", lw=0, markersize=4,
                          label="sample of the stream"))
    return handles


def draw_k(ax_k: Any, ax_gap: Any, view: ModelView) -> None:
    """Top: K over the stream (the line) and the K chosen at each refit (the dots, numbered).
    Bottom: at each refit, how much worse the runner-up scored than the chosen K."""
    from online_gmm.timeline import criterion_gap

    tl = view.timeline
    if tl.get("good_end"):
        xs = [x for x, k in zip(tl["good_end"], tl["k"]) if k is not None]
        ks = [k for k in tl["k"] if k is not None]
        if xs:
            ax_k.step(xs, ks, where="post", color="0.25", lw=1.5, label="K in use")
    rows = [r for r in view.bic_rows if r.get("n_seen") is not None]
    if len(rows) <= MAX_REFITS_DRAWN:
        xs = [r["n_seen"] for r in rows]
        chosen = [r["chosen_k"] for r in rows]
        gaps = [criterion_gap(r) for r in rows]
    else:      # a long job: the last refit of each timeline entry (as many points as entries)
        last = [i for i, n in enumerate(tl.get("refits") or []) if n]
        xs = [tl["good_end"][i] for i in last]
        chosen = [tl["chosen_k"][i] for i in last]
        gaps = [tl["bic_gap"][i] for i in last]
    if xs:
        ax_k.scatter(xs, chosen, s=36 if len(xs) <= 100 else 9, color="black", zorder=3,
                     label="chosen at a refit")
        if len(xs) <= 40:
            for x, k in zip(xs, chosen):
                ax_k.annotate(str(k), (x, k), textcoords="offset points", xytext=(0, 7), ha="center",
                              fontsize=8)
        pts = [(x, g) for x, g in zip(xs, gaps) if g is not None]
        if pts:
            gx, gy = zip(*pts)
            width = 0.6 * (min(np.diff(gx)) if len(gx) > 1 else max(gx[0], 1.0))
            ax_gap.bar(gx, gy, width=width, color="0.35")
            ax_gap.set_yscale("symlog", linthresh=10.0)
            ax_gap.axhline(10.0, color=_ANOMALY, ls=":", lw=1.2)
            ax_gap.annotate("below 10: a weak preference", xy=(0.995, 10.0),
                            xycoords=("axes fraction", "data"), xytext=(0, 2), textcoords="offset points",
                            ha="right", fontsize=7, color=_ANOMALY,
                            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
            ax_gap.set_ylim(0, max(100.0, 3 * max(gy)))
    else:
        ax_gap.text(0.5, 0.5, "no refit yet", ha="center", va="center", transform=ax_gap.transAxes)
    crit = (view.bic_rows[-1].get("criterion", "bic") if view.bic_rows else "bic").upper()
    ax_k.set_ylabel("components K", fontsize=8)
    ax_k.yaxis.get_major_locator().set_params(integer=True)
    if ax_k.has_data():
        lo, hi = ax_k.get_ylim()
        ax_k.set_ylim(lo - 0.4, hi + 0.6)
    ax_k.set_title(f"K chosen over the stream, and how clearly {crit} chose it", fontsize=10)
    if ax_k.has_data():
        ax_k.legend(loc="best", fontsize=8)
    ax_gap.set_ylabel(f"{crit} margin\nover runner-up", fontsize=8)
    ax_gap.set_xlabel("good records seen")


def draw_timeline(ax_rate: Any, ax_ll: Any, view: ModelView) -> None:
    """Top: the share of good records flagged as anomalies (and the share expected from the
    threshold's quantile). Bottom: the mean log-likelihood of the scored records."""
    tl = view.timeline
    xs = tl.get("good_end") or []
    rate = [np.nan if r is None else 100.0 * r for r in tl.get("anomaly_rate", [])]
    ll = [np.nan if v is None else v for v in tl.get("mean_loglik", [])]
    ll_kept = [np.nan if v is None else v for v in tl.get("mean_loglik_kept", [])]
    if xs:
        ax_rate.plot(xs, rate, color=_ANOMALY, lw=1.5, marker=".", label="flagged")
        ax_ll.plot(xs, ll, color="#9ecae1", lw=1.2, marker=".", label="all scored records")
        if ll_kept:
            ax_ll.plot(xs, ll_kept, color="#08519c", lw=1.6, marker=".", label="records not flagged")
        ax_ll.legend(loc="best", fontsize=7)
    else:
        for ax in (ax_rate, ax_ll):
            ax.text(0.5, 0.5, "no batch recorded", ha="center", va="center", transform=ax.transAxes)
    if view.quantile is not None:
        ax_rate.axhline(100 * (1 - view.quantile), color="0.4", ls="--", lw=1,
                        label=f"expected by construction ({1 - view.quantile:.0%})")
    ax_rate.set_ylabel("flagged (% of\ngood records)", fontsize=8)
    ax_rate.set_title("Anomaly rate and mean log-likelihood over the stream", fontsize=10)
    if xs:
        ax_rate.legend(loc="best", fontsize=8)
    ax_ll.set_ylabel("mean log p(x)", fontsize=8)
    ax_ll.set_xlabel("good records seen")


def overview_figure(view: ModelView) -> Any:
    """One figure with everything: the plane, K over time, the timeline and (D <= 6) the pairs."""
    import matplotlib.pyplot as plt

    pairs = view.n_features <= MAX_PAIR_FEATURES and view.n_features >= 2
    fig = plt.figure(figsize=(15, 14 if pairs else 7))   # margins set by hand: no layout engine
    top, bottom = (fig.subfigures(2, 1, height_ratios=[1, 1.05]) if pairs else (fig, None))
    left, right = top.subfigures(1, 2, width_ratios=[1.1, 1])
    draw_plane(left.subplots(gridspec_kw={"left": 0.09, "right": 0.97, "bottom": 0.1, "top": 0.86}), view)
    axes = right.subplots(4, 1, sharex=True, gridspec_kw={
        "height_ratios": [1.3, 0.8, 1, 1], "left": 0.13, "right": 0.97, "bottom": 0.08, "top": 0.86,
        "hspace": 0.55})
    draw_k(axes[0], axes[1], view)
    axes[1].set_xlabel("")
    draw_timeline(axes[2], axes[3], view)
    if bottom is not None:
        draw_pairs(bottom, view)
    fig.suptitle(view.title(), fontsize=13, fontweight="bold")
    return fig
