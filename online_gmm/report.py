"""``online-gmm report``: one self-contained HTML page about a job, read at a glance.

The page holds the pictures of :mod:`online_gmm.plots` as inline SVG (drawn by matplotlib, text as
paths, the scatter of the sample as an embedded raster), tables of the components, the counters, the
recent refits and the configuration, and a small inline style sheet. It loads nothing: no script, no
font, no image from the network, so it opens anywhere, offline, and can be attached to a ticket.
Everything comes from the checkpoint: the model, its refit sample, the BIC history and the timeline
(:class:`~online_gmm.timeline.Timeline`); checkpoints written before timelines were kept give a
report without the time series.

:func:`write_png` draws the same pictures into one PNG (``online-gmm plot``, the demo).
"""

from __future__ import annotations

import datetime as _dt
import html
import io
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from online_gmm.plots import MAX_PAIR_FEATURES, ModelView, component_color

__all__ = ["load_view", "write_report", "write_png", "render_html"]


def load_view(checkpoint: str | Path) -> tuple[ModelView, dict[str, Any]]:
    """Gather what the pictures show from a checkpoint (a file, or the newest in a folder).

    Returns
    -------
    view : ModelView
    meta : dict
        The checkpoint's metadata.

    Raises
    ------
    CheckpointError, OSError, ValueError
        No loadable checkpoint, or a model still warming up.
    """
    from online_gmm.refit import BICHistory, Reservoir, _full_covariances
    from online_gmm.timeline import Timeline

    params, meta, parts = _load_params(checkpoint)
    d = params.n_features
    names = list(meta.get("feature_names") or [f"x{i}" for i in range(d)])
    labels = meta.get("labels") or list(range(params.n_components))
    sample = np.empty((0, d))
    if parts.get("reservoir") and parts["reservoir"][1] is not None:
        sample = Reservoir.from_arrays(*parts["reservoir"]).data().reshape(-1, d)
    elif parts.get("sample"):                      # a scaled-out job's bottom-k sample
        from online_gmm._bottomk import BottomK
        sample = BottomK.from_arrays(*parts["sample"]).data().reshape(-1, d)
    timeline = Timeline.from_state(meta.get("timeline"))
    flagged = np.asarray(timeline.flagged, dtype=np.float64).reshape(-1, d)
    columns = timeline.columns()
    columns["mean_loglik"] = timeline.mean_loglik()
    columns["mean_loglik_kept"] = timeline.mean_loglik_kept()
    columns["anomaly_rate"] = timeline.anomaly_rate()
    anomaly = meta.get("anomaly") or {}
    view = ModelView(
        weights=np.asarray(params.weights, dtype=np.float64),
        means=np.asarray(params.means, dtype=np.float64),
        covariances=np.asarray(_full_covariances(params), dtype=np.float64),
        labels=[int(x) for x in labels], feature_names=names, sample=sample, flagged=flagged,
        bic_rows=list(BICHistory.from_arrays(*parts["history"])), timeline=columns,
        counters=dict(meta.get("counters") or {}), quantile=anomaly.get("q"))
    return view, meta


def _load_params(path: str | Path) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The fitted parameters, metadata and parts of a checkpoint, without scikit-learn (the
    estimator of :func:`online_gmm.pipeline.load_model` is not needed to draw)."""
    from online_gmm.pipeline import load_online

    online, _, meta, parts = load_online(path)
    return online.params, meta, parts


def _pyplot() -> Any:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError('matplotlib is needed for plots and reports: pip install "online-gmm[plot]"') \
            from None
    return plt


def write_png(view: ModelView, path: str | Path, *, dpi: int = 90) -> None:
    """The overview figure (:func:`online_gmm.plots.overview_figure`) as a PNG."""
    plt = _pyplot()
    from online_gmm.plots import overview_figure

    fig = overview_figure(view)
    try:
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


def _svg(name: str, draw: Callable[[Any], None], size: tuple[float, float]) -> str:
    """A figure drawn by ``draw(fig)`` as an inline ``<svg>`` element (its ids salted by ``name``, so
    several figures in one page never share an id, and the output is reproducible). No layout
    engine: ``draw`` sets its margins (a constrained layout doubled the time to draw a page)."""
    plt = _pyplot()
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": f"online-gmm-{name}", "svg.fonttype": "path"}):
        fig = plt.figure(figsize=size)
        try:
            draw(fig)
            buf = io.StringIO()
            fig.savefig(buf, format="svg", dpi=110, metadata={"Date": None})
        finally:
            plt.close(fig)
    text = buf.getvalue()
    start = text.index("<svg")
    svg = text[start:]
    return svg.replace("<svg ", f'<svg role="img" aria-label="{html.escape(name)}" class="figure" ', 1)


def _figures(view: ModelView) -> dict[str, str]:
    from online_gmm.plots import draw_k, draw_pairs, draw_plane, draw_timeline

    margins = {"left": 0.13, "right": 0.98, "bottom": 0.12, "top": 0.9, "hspace": 0.3}

    def k_panels(fig: Any) -> None:
        ax_k, ax_gap = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.4, 1], **margins})
        draw_k(ax_k, ax_gap, view)

    def timeline(fig: Any) -> None:
        ax_rate, ax_ll = fig.subplots(2, 1, sharex=True, gridspec_kw=margins)
        draw_timeline(ax_rate, ax_ll, view)

    def plane(fig: Any) -> None:
        draw_plane(fig.subplots(gridspec_kw={"left": 0.1, "right": 0.98, "bottom": 0.09, "top": 0.9}), view)

    figures = {"components": _svg("components", plane, (7.0, 6.4))}
    if 2 <= view.n_features <= MAX_PAIR_FEATURES:
        side = 1.9 * view.n_features + 1.2
        figures["pairs"] = _svg("pairs", lambda fig: draw_pairs(fig, view), (side, side))
    figures["k"] = _svg("k", k_panels, (7.0, 3.9))
    figures["timeline"] = _svg("timeline", timeline, (7.0, 3.9))
    return figures


def _table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _num(x: Any, fmt: str = ".4g") -> str:
    if x is None:
        return "–"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    return format(float(x), fmt)


def render_html(view: ModelView, meta: dict[str, Any], *, source: str = "") -> str:
    """The report page as a string (see the module's docstring)."""
    from online_gmm.timeline import criterion_gap

    figures = _figures(view)
    names = view.feature_names
    comp_rows = []
    for k, label in enumerate(view.labels):
        swatch = f'<span class="swatch" style="background:{component_color(label)}"></span>'
        comp_rows.append([f"{swatch}{label}", f"{view.weights[k]:.1%}"] +
                         [_num(v) for v in view.means[k]] +
                         [_num(float(np.sqrt(max(view.covariances[k][i, i], 0.0))))
                          for i in range(len(names))])
    components = _table(["component", "weight"] + [f"mean {html.escape(n)}" for n in names] +
                        [f"sd {html.escape(n)}" for n in names], comp_rows, "num")
    counters = _table(["counter", "value"],
                      [[html.escape(k), _num(int(v))] for k, v in view.counters.items()],
                      "num narrow")
    crit = view.bic_rows[-1].get("criterion", "bic") if view.bic_rows else "bic"
    refit_rows = []
    for r in view.bic_rows[-12:][::-1]:
        by_k = {c["k"]: c for c in r["candidates"]}
        refit_rows.append([_num(r.get("n_seen")), f"<b>{r['chosen_k']}</b>", _num(criterion_gap(r), ".1f"),
                           ", ".join(f"K={k}: {by_k[k][crit]:.1f}" for k in sorted(by_k))])
    refits = (_table(["good records seen", "chosen K", f"{crit.upper()} margin over the runner-up",
                      f"{crit.upper()} of each candidate"], refit_rows, "num")
              if refit_rows else "<p>No refit yet.</p>")
    config = meta.get("config")
    if config is None:
        config = {"model": meta.get("model_params"), "anomaly": meta.get("anomaly", {}) and
                  {k: v for k, v in meta["anomaly"].items() if k in ("q", "threshold", "min_samples")},
                  "note": "this checkpoint does not hold the job's configuration (written by an "
                          "older release, or by a pipeline built in Python)"}
    config_text = html.escape(_as_toml(config))
    threshold = _saved_threshold(meta)
    kpis = [("components (K)", str(len(view.weights))),
            ("good records", _num(view.counters.get("good", 0))),
            ("flagged", _num(view.counters.get("anomalies", 0))),
            ("rejected", _num(view.counters.get("rejected", 0))),
            ("refits", _num(view.counters.get("refits", 0))),
            ("threshold on −log p", _num(threshold, ".3g"))]
    kpi_html = "".join(f'<div class="kpi"><div class="v">{v}</div><div class="k">{html.escape(k)}</div></div>'
                       for k, v in kpis)
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    pairs = (f"<section><h2>Every pair of features</h2>{figures['pairs']}</section>"
             if "pairs" in figures else
             f"<section><h2>Every pair of features</h2><p>Not drawn for {view.n_features} "
             f"feature(s) (at most {MAX_PAIR_FEATURES}, at least 2).</p></section>")
    return _PAGE.format(
        title=html.escape(f"online-gmm report: {view.title()}"), heading=html.escape(view.title()),
        source=f" of <code>{html.escape(source)}</code>" if source else "", when=when, style=_STYLE,
        kpis=kpi_html,
        components_svg=figures["components"], components_table=components, pairs=pairs,
        k_svg=figures["k"], refits=refits, timeline_svg=figures["timeline"], counters=counters,
        config=config_text)


def _as_toml(config: dict[str, Any]) -> str:
    """The configuration as the TOML a user writes: tables, ``key = value`` (JSON values on one
    line), keys left at None omitted (TOML has no null).

    Examples
    --------
    >>> print(_as_toml({"model": {"n_components": 3, "halflife": None},
    ...                 "sinks": {"scores": {"type": "jsonl", "settings": {}}}}))
    [model]
    n_components = 3
    <BLANKLINE>
    [sinks.scores]
    type = "jsonl"
    """
    lines: list[str] = []

    def table(name: str, values: dict[str, Any]) -> None:
        if name == "sinks":                       # the one section made of tables
            for key, sub in values.items():
                table(f"sinks.{key}", sub)
            return
        kept = {k: v for k, v in values.items() if v is not None and v != {}}
        if kept:
            lines.extend(([""] if lines else []) + [f"[{name}]"])
            lines.extend(f"{k} = {json.dumps(v, default=str)}" for k, v in kept.items())

    for section, values in config.items():
        if isinstance(values, dict):
            table(section, values)
        elif values is not None:
            lines.insert(0, f"{section} = {json.dumps(values, default=str)}")
    return "\n".join(lines)


def _saved_threshold(meta: dict[str, Any]) -> float | None:
    timeline = meta.get("timeline") or {}
    values = [v for v in (timeline.get("entries") or {}).get("threshold", []) if v is not None]
    return values[-1] if values else None


def write_report(view: ModelView, meta: dict[str, Any], out: str | Path, *, source: str = "") -> None:
    """Write the HTML report of a checkpoint's :func:`load_view` to ``out``."""
    Path(out).write_text(render_html(view, meta, source=source), encoding="utf-8")


_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
color:#1d1d1f;background:#f6f7f9}
header{background:#1f2a44;color:#fff;padding:18px 28px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#c8d0e0;font-size:13px}
main{max-width:1400px;margin:0 auto;padding:16px 24px 40px}
section{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:14px 18px;margin:16px 0}
h2{font-size:17px;margin:2px 0 10px}p.note{color:#555;font-size:13px;margin:6px 0}
.kpis{display:flex;flex-wrap:wrap;gap:12px}.kpi{background:#fff;border:1px solid #e1e4ea;
border-radius:8px;padding:10px 16px;min-width:120px}.kpi .v{font-size:22px;font-weight:600}
.kpi .k{font-size:12px;color:#555}svg.figure{max-width:100%;height:auto;display:block;margin:0 auto}
table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{padding:4px 10px;
border-bottom:1px solid #e6e8ee;text-align:left}table.num td{font-variant-numeric:tabular-nums}
.swatch{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px;
vertical-align:-1px}pre{background:#f3f4f7;padding:10px;border-radius:6px;overflow:auto;font-size:12px}
.grid{display:grid;grid-template-columns:1fr 2fr;gap:16px}.two{display:grid;grid-template-columns:1fr 1fr;
gap:16px}.two section,.grid section{margin:16px 0 0}@media(max-width:1000px){.grid,.two{display:block}}
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<header><h1>{heading}</h1><p>online-gmm report{source}, written {when}</p></header>
<main>
<div class="kpis">{kpis}</div>
<div class="two">
<section><h2>Components</h2>
<p class="note">Each ellipse holds about 86% of its component (2 standard deviations); grey dots are
the refit sample of the stream (anomalies are kept out of it), red crosses the most recent flagged
records. The axes are the two combinations of features along which the components differ most
relative to their own spread; their formulas are on the axes.</p>
{components_svg}
</section>
<section><h2>Over time</h2>
<p class="note">K chosen at each refit, and by how much the runner-up lost (a small margin: the data
barely prefer it). Below, the share of good records flagged against the share the threshold flags by
construction, and the mean log-likelihood: a rise of the one or a fall of the other means the stream
moved away from the model, or a new kind of record appeared before a refit took it in.</p>
{k_svg}
{timeline_svg}
</section>
</div>
<section><h2>Components in numbers</h2>
{components_table}
</section>
{pairs}
<div class="grid">
<section><h2>Counters</h2>{counters}</section>
<section><h2>Recent refits</h2>{refits}</section>
</div>
<section><h2>Configuration</h2><pre>{config}</pre></section>
</main>
</body>
</html>
"""
