"""Tests of online_gmm.anomaly: thresholds, their JSON state, the River filter, the sklearn flagger."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from river import compose, preprocessing, stats
from sklearn.metrics import roc_auc_score

from online_gmm import OnlineGaussianMixture
from online_gmm.anomaly import (GMMOutlierDetector, NLLFilter, NLLThreshold, quantile_from_state,
                                quantile_to_state)
from online_gmm.river import GMMAnomalyDetector


def test_quantile_state_round_trip_continues_identically():
    rng = np.random.RandomState(0)
    q = stats.Quantile(0.99)
    for v in rng.standard_normal(500):
        q.update(float(v))
    state = json.loads(json.dumps(quantile_to_state(q)))
    r = quantile_from_state(state)
    assert r._quantile.__getstate__() == q._quantile.__getstate__()
    for v in rng.standard_normal(300):
        q.update(float(v))
        r.update(float(v))
        assert r.get() == q.get()


def test_quantile_state_before_any_update():
    r = quantile_from_state(json.loads(json.dumps(quantile_to_state(stats.Quantile(0.9)))))
    assert r.get() is None


@pytest.mark.parametrize("kind", [{"q": 0.95, "min_samples": 50}, {"q": None, "threshold": 3.5}])
def test_threshold_state_is_json_and_exact(kind):
    t = NLLThreshold(**kind)
    rng = np.random.RandomState(1)
    for v in rng.standard_normal(200):
        t.update(float(v))
    u = NLLThreshold.from_state(json.loads(json.dumps(t.to_state())))
    assert (u.threshold_, u.n_seen_) == (t.threshold_, t.n_seen_)
    for v in rng.standard_normal(50):
        t.update(float(v))
        u.update(float(v))
    assert u.threshold_ == t.threshold_


def test_threshold_validation_and_warm_up():
    with pytest.raises(ValueError, match="exactly one of q and threshold"):
        NLLThreshold(q=0.9, threshold=1.0)
    with pytest.raises(ValueError, match=r"q must be a number in \(0, 1\), got 1.5"):
        NLLThreshold(q=1.5)
    t = NLLThreshold(q=0.9, min_samples=10)
    for v in range(9):
        t.update(float(v))
    assert t.threshold_ == math.inf and not t.classify(1e9)
    t.update(9.0)
    assert math.isfinite(t.threshold_)


def _stream(n, shift_at=None, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 3))
    if shift_at is not None:
        X[shift_at:] += 6.0
    return [{f"x{j}": float(v) for j, v in enumerate(row)} for row in X]


def _detector(**kw):
    return GMMAnomalyDetector(n_components=1, warm_up=100, update_every=16, halflife=300.0, seed=0, **kw)


def test_protect_with_fixed_threshold_goes_stale_and_adapt_recovers():
    """River issue #948: a protected detector with a fixed threshold never learns the new regime."""
    stream = _stream(3000, shift_at=1000)
    protected = NLLFilter(_detector(), q=None, threshold=15.0, protect_anomaly_detector=True)
    adaptive = NLLFilter(_detector(), q=None, threshold=15.0, protect_anomaly_detector=False)
    for x in stream:
        protected.learn_one(x)
        adaptive.learn_one(x)
    late = stream[-200:]
    stale = np.mean([protected.classify(protected.score_one(x)) for x in late])
    fresh = np.mean([adaptive.classify(adaptive.score_one(x)) for x in late])
    assert stale == 1.0 and fresh < 0.05


def test_filter_flags_about_the_top_share():
    f = NLLFilter(_detector(), q=0.98, min_samples=100)
    for x in _stream(3000, seed=2):
        f.learn_one(x)
    assert 0.01 <= f.n_flagged_ / 3000 <= 0.04
    state = json.loads(json.dumps(f.to_state()))
    g = NLLFilter(_detector(), q=0.98, min_samples=100)
    g.load_state(state)
    assert g.threshold_.threshold_ == f.threshold_.threshold_ and g.n_flagged_ == f.n_flagged_


def _bench_anomaly():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_anomaly
    return bench_anomaly


def test_gmm_detector_beats_chance_on_breast_cancer():
    """Prequential ROC-AUC on scikit-learn's breast-cancer data: benign records plus 5% malignant
    ones (the anomalies). Chance is 0.5; the benchmark measures about 0.9."""
    bench = _bench_anomaly()
    X, y = bench.breast_cancer()
    model = compose.Pipeline(preprocessing.StandardScaler(),
                             GMMAnomalyDetector(n_components=1, warm_up=60, reg_covar=0.3,
                                                update_every=8, seed=0))
    auc = roc_auc_score(y, bench.prequential_river(model, bench.as_dicts(X)))
    assert auc > 0.8


def test_benchmark_rule_standardizes_and_scores_breast_cancer():
    """The benchmark's one GMM rule (standardize=True, K and warm-up from n): on the first order of
    the breast-cancer stream it measured 0.963; well above chance, with the scale frozen."""
    bench = _bench_anomaly()
    X, y = bench.breast_cancer(seed=0)
    n, d = X.shape
    params = bench.gmm_params(n, d)
    assert params["standardize"] and params["n_components"] == 2 and params["warm_up"] == 32
    model = bench.gmm_detector(n, d)
    scores = bench.prequential_river(model, bench.as_dicts(X))
    assert roc_auc_score(y, scores) > 0.9
    order = [int(name[1:]) for name in model.features_]    # "x0", "x1", "x10", ...: sorted names
    np.testing.assert_allclose(model.scale_, X[:32, order].std(axis=0), rtol=1e-10)


def test_sklearn_outlier_detector_conventions():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(2000, 3))
    det = GMMOutlierDetector(OnlineGaussianMixture(n_components=1), contamination=0.02).fit(X)
    pred = det.predict(X)
    assert set(np.unique(pred)) == {-1, 1}
    assert np.mean(pred == -1) == pytest.approx(0.02, abs=1e-3)
    np.testing.assert_array_equal(pred == -1, det.decision_function(X) < 0)
    np.testing.assert_allclose(det.decision_function(X), det.score_samples(X) - det.offset_)
    assert det.fit_predict(X).tolist() == pred.tolist()
    state = json.loads(json.dumps(det.to_state()))
    other = GMMOutlierDetector(OnlineGaussianMixture(n_components=1), contamination=0.02).fit(X[:10])
    other.load_state(state)
    assert other.offset_ == det.offset_
    with pytest.raises(ValueError, match=r"contamination must be a float in \(0, 0.5\], got 0.7"):
        GMMOutlierDetector(contamination=0.7).fit(X)


def test_sklearn_outlier_detector_partial_fit_scores_before_learning():
    rng = np.random.RandomState(1)
    det = GMMOutlierDetector(OnlineGaussianMixture(n_components=1, warm_up=200), contamination=0.05,
                             protect=True)
    for batch in np.array_split(rng.normal(size=(3000, 2)), 30):
        det.partial_fit(batch)
    assert math.isfinite(det.offset_)
    test = rng.normal(size=(4000, 2))
    assert np.mean(det.predict(test) == -1) == pytest.approx(0.05, abs=0.02)
    assert det.predict([[8.0, 8.0]])[0] == -1


def test_detector_scores_the_warm_up_with_a_provisional_diagonal_gaussian():
    rng = np.random.RandomState(3)
    X = rng.normal(size=(40, 3)) * [1.0, 2.0, 0.5] + [0.0, 5.0, -1.0]
    model = GMMAnomalyDetector(n_components=2, warm_up=200, update_every=8, reg_covar=1e-3, seed=0)
    x0 = {"a": 0.1, "b": 4.0, "c": -1.2}
    assert model.score_one(x0) == 0.0
    model.learn_one(dict(zip("abc", X[0])))
    assert model.score_one(x0) == 0.0          # fewer than two records: no provisional model
    for row in X[1:]:
        model.learn_one(dict(zip("abc", row)))
    assert model.params_ is None               # still warming up
    var = X.var(axis=0) + 1e-3
    x = np.array([0.1, 4.0, -1.2])
    expected = 0.5 * np.sum((x - X.mean(axis=0)) ** 2 / var + np.log(2 * np.pi * var))
    assert model.score_one(x0) == pytest.approx(expected, rel=1e-9)
    # a missing feature: the exact marginal of the provisional Gaussian
    expected_ab = 0.5 * np.sum(((x - X.mean(axis=0)) ** 2 / var + np.log(2 * np.pi * var))[:2])
    assert model.score_one({"a": 0.1, "b": 4.0}) == pytest.approx(expected_ab, rel=1e-9)
    import pandas as pd
    frame = pd.DataFrame([x0])
    assert model.score_many(frame).iloc[0] == pytest.approx(expected, rel=1e-9)
    assert model.score_one({"a": 0.0, "b": 5.0, "c": -1.0}) < model.score_one({"a": 6.0, "b": 5.0, "c": -1.0})
