"""The job's timeline (bounded, kept in checkpoints, continued across resume) and the report's
separating plane, checked against independent references."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from connectors.deadletter import DeadLetterSink
from connectors.files import JSONLinesSink, JSONLinesSource
from online_gmm.anomaly import NLLThreshold
from online_gmm.checkpoint import CheckpointStore
from online_gmm.demo import DEMO_FIELDS, write_events
from online_gmm.logs import LOGGER_NAME, JobLog
from online_gmm.metrics import JobMetrics
from online_gmm.model_spec import ModelSpec
from online_gmm.pipeline import Pipeline
from online_gmm.plots import discriminant_directions
from online_gmm.timeline import Timeline

WALL_CLOCK = ("time", "seconds")


def _pipeline(tmp, data, ck="ck"):
    pipe = Pipeline(
        JSONLinesSource(str(data), fields=DEMO_FIELDS, name="events"),
        ModelSpec(n_components=3, warm_up=600, random_state=0), batch_size=100,
        scores=JSONLinesSink(str(tmp / f"{ck}.scores.jsonl")),
        dead_letters=DeadLetterSink(JSONLinesSink(str(tmp / f"{ck}.dead.jsonl"))),
        anomaly=NLLThreshold(q=0.98, min_samples=200), refit_every=1000, refit_candidates=[2, 3, 4],
        reservoir_size=800, refit_n_init=1, checkpoint_dir=str(tmp / ck), checkpoint_every=700,
        feature_names=DEMO_FIELDS)
    pipe.timeline = Timeline(capacity=8, max_flagged=20)   # kept by resume from the checkpoint
    return pipe


def _comparable(t: Timeline) -> dict:
    state = t.to_state()
    state["entries"] = {k: v for k, v in state["entries"].items() if k not in WALL_CLOCK}
    return state


def test_timeline_is_bounded_and_resumes_as_an_uninterrupted_run(tmp_path, caplog):
    data = tmp_path / "events.jsonl"
    truth = write_events(data, n=4000, seed=11)
    ref = _pipeline(tmp_path, data, "ref")
    s = ref.run()
    ref.close()
    t = ref.timeline
    # 40+ batches in at most 8 entries: merged pairs, every batch and record still counted once
    assert len(t) <= 8 and t.span >= 8
    cols = t.columns()
    assert sum(cols["batches"]) == s.batches and sum(cols["records"]) == s.records == 4000
    assert sum(cols["rejected"]) == s.rejected == int(truth["bad"].sum())
    assert sum(cols["flagged"]) == s.anomalies > 0 and sum(cols["refits"]) == s.refits
    assert cols["records_end"][-1] == s.records and cols["good_end"][-1] == s.good
    assert cols["k"][-1] == s.n_components and cols["threshold"][-1] > 0
    assert len(t.flagged) == 20
    rates = [r for r in t.anomaly_rate() if r is not None]
    assert 0 < np.mean(rates) < 0.2
    # stopped at a batch boundary, resumed from its checkpoint in a new pipeline: the same timeline
    first = _pipeline(tmp_path, data, "run")
    first.run(max_records=1900)
    first.close()
    second = _pipeline(tmp_path, data, "run")
    metrics, joblog = JobMetrics(second.source), JobLog()
    second.observers += [metrics, joblog]
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    second.run()
    second.close()
    assert second.summary.resumed_from is not None
    assert _comparable(second.timeline) == _comparable(ref.timeline)
    # the resume is an event; metrics count what this process did, from 0
    events = [(r.event, r.fields) for r in caplog.records if r.name == LOGGER_NAME]
    assert events[0][0] == "resume" and events[0][1]["counters"]["records"] == first.summary.records
    assert events[0][1]["path"] == second.summary.resumed_from
    read = metrics.registry.get_sample_value("online_gmm_records_total", {"status": "read"})
    assert read == 4000 - first.summary.records
    assert metrics.registry.get_sample_value("online_gmm_components") == second.summary.n_components


def test_checkpoint_without_timeline_still_loads(tmp_path, monkeypatch):
    """A v2 checkpoint written before timelines (no 'timeline'/'config' key) resumes with an empty
    timeline and still makes a report."""
    data = tmp_path / "events.jsonl"
    write_events(data, n=1500, seed=2)
    pipe = _pipeline(tmp_path, data)
    pipe.run(max_records=1200)
    pipe.close()
    store = CheckpointStore(tmp_path / "ck")
    arrays, meta, _ = store.load_latest()
    del meta["timeline"], meta["config"]
    store.save(arrays, meta)
    again = _pipeline(tmp_path, data)
    again.run()
    again.close()
    assert again.summary.records == 1500
    # only what it saw itself
    assert sum(again.timeline.columns()["records"]) == 1500 - pipe.summary.records
    from online_gmm import report
    from online_gmm.plots import draw_k, draw_timeline
    store.save(arrays, meta)
    view, meta = report.load_view(tmp_path / "ck")
    assert view.timeline["batches"] == [] and len(view.flagged) == 0
    # the time series say there is nothing to draw (the full page is drawn in test_watch/test_cli)
    svg = report._svg("t", lambda fig: draw_timeline(*fig.subplots(2, 1), view), (4, 3))
    svg += report._svg("k", lambda fig: draw_k(*fig.subplots(2, 1), view), (4, 3))
    assert svg.count("<svg") == 2
    monkeypatch.setattr(report, "_figures", lambda v: dict.fromkeys(["components", "k", "timeline"], ""))
    page = report.render_html(view, meta)
    assert "does not hold the job&#x27;s configuration" in page and "n_components" in page


def test_timeline_state_is_checked():
    with pytest.raises(ValueError, match="capacity must be an even integer"):
        Timeline(capacity=7)
    with pytest.raises(ValueError, match="timeline format"):
        Timeline.from_state({"format": 99})
    assert len(Timeline.from_state(None)) == 0


@pytest.mark.parametrize("k", [2, 4])
def test_separating_plane_matches_sklearn_lda_on_a_sample(k):
    """The directions from the fitted parameters span the plane scikit-learn's LDA finds on a large
    sample drawn from those parameters (shared covariance, so LDA's model holds exactly)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    rng = np.random.default_rng(k)
    d = 5
    a = rng.normal(size=(d, d))
    cov = a @ a.T + d * np.eye(d)
    means = rng.normal(scale=4.0, size=(k, d))
    weights = np.full(k, 1.0 / k)
    v, sep = discriminant_directions(weights, means, np.stack([cov] * k))
    assert v.shape == (d, 2) and np.allclose(np.linalg.norm(v, axis=0), 1.0) and sep[0] >= sep[1]
    n = 40_000
    y = rng.integers(k, size=n)
    X = means[y] + rng.multivariate_normal(np.zeros(d), cov, size=n)
    lda = LinearDiscriminantAnalysis(solver="eigen").fit(X, y)
    ref = lda.scalings_[:, :min(2, k - 1)]
    ref = ref / np.linalg.norm(ref, axis=0)
    for j in range(ref.shape[1]):        # each reference direction lies in our plane
        resid = ref[:, j] - v @ np.linalg.lstsq(v, ref[:, j], rcond=None)[0]
        assert np.linalg.norm(resid) < 0.05, (j, resid)
    assert abs(ref[:, 0] @ v[:, 0]) > 0.99     # and the first one is our first


def test_k_panels_of_a_long_job_draw_the_bounded_timeline():
    """Past MAX_REFITS_DRAWN refits the K panels draw one point per timeline entry, not per refit."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from online_gmm.plots import MAX_REFITS_DRAWN, ModelView, draw_k

    t = Timeline(capacity=16)
    rows = []
    for b in range(2 * MAX_REFITS_DRAWN):
        t.add_batch(records=100, good=100, rejected=0, flagged=1, scored=100, sum_loglik=-300.0, k=3,
                    threshold=9.0, records_end=100 * (b + 1), good_end=100 * (b + 1), seconds=0.0,
                    time=0.0)
        row = {"n_seen": 100 * (b + 1), "chosen_k": 3 + b % 2, "criterion": "bic",
               "candidates": [{"k": 3, "bic": 10.0 + b % 2 * 20}, {"k": 4, "bic": 20.0}]}
        t.add_refit(row)
        rows.append(row)
    d = 2
    view = ModelView(weights=np.ones(2) / 2, means=np.zeros((2, d)), covariances=np.stack([np.eye(d)] * 2),
                     labels=[0, 1], feature_names=["a", "b"], sample=np.empty((0, d)),
                     flagged=np.empty((0, d)), bic_rows=rows, timeline=t.columns())
    fig, (ax_k, ax_gap) = plt.subplots(2, 1)
    try:
        draw_k(ax_k, ax_gap, view)
        points = ax_k.collections[0].get_offsets()
        assert len(points) == len(t) <= 16
        assert points[-1].tolist() == [100.0 * 2 * MAX_REFITS_DRAWN, 4.0]   # the last refit's K
        assert [b.get_height() for b in ax_gap.patches][-1] == 10.0          # and its margin
    finally:
        plt.close(fig)
