"""Tests of online_gmm.anomaly: thresholds, their JSON state, the River filter, the sklearn flagger."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from river import compose, preprocessing
from sklearn.metrics import roc_auc_score

from online_gmm import OnlineGaussianMixture
from online_gmm.anomaly import GMMOutlierDetector, NLLFilter, NLLThreshold
from online_gmm.river import GMMAnomalyDetector


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


def test_flag_many_compares_each_batch_with_the_threshold_before_it():
    """Each record of a batch is compared with the threshold of the scores before the batch; then
    the batch updates the sketch. Reference: the same rule written with the per-record API."""
    rng = np.random.RandomState(4)
    batches = [rng.standard_normal(n) for n in (30, 250, 1, 400, 0, 319)]
    t = NLLThreshold(q=0.9, min_samples=100)
    ref = NLLThreshold(q=0.9, min_samples=100)
    seen = 0
    for batch in batches:
        flags = t.flag_many(batch)
        cut = min(len(batch), max(0, 100 - seen))          # the warm-up ends inside this batch
        expected = np.zeros(len(batch), dtype=bool)
        ref.update_many(batch[:cut])
        if cut < len(batch):
            expected[cut:] = batch[cut:] > ref.threshold_
            ref.update_many(batch[cut:])
        seen += len(batch)
        np.testing.assert_array_equal(flags, expected)
        assert t.to_state() == ref.to_state()
    assert t.n_seen_ == 1000 and t.sketch.n == 1000


def test_per_record_path_is_the_batch_rule_with_blocks_of_32():
    """River's per-record use (classify, then update) updates the sketch at every 32nd score and at
    the min_samples-th: the same flags and bytes as flag_many over those blocks."""
    rng = np.random.RandomState(7)
    scores = rng.standard_t(3, size=1000)
    scores[[150, 400]] = np.inf
    one = NLLThreshold(q=0.95, min_samples=100)
    flags = []
    for s in scores:
        flags.append(one.classify(float(s)))
        one.update(float(s))
    cuts = [0, 32, 64, 96, 100] + list(range(128, 1000, 32)) + [1000]
    batch = NLLThreshold(q=0.95, min_samples=100)
    expected = np.concatenate([batch.flag_many(scores[a:b]) for a, b in itertools.pairwise(cuts)])
    np.testing.assert_array_equal(flags, expected)
    assert flags[400] and 20 <= sum(flags) <= 80
    pending = one.to_state()["pending"]
    assert pending == scores[-(1000 % 32):].tolist()
    flushed = NLLThreshold.from_state(one.to_state())
    flushed.update_many(np.array([]))                      # the pending block into the sketch
    assert flushed.sketch.to_state() == batch.sketch.to_state()
    restored = NLLThreshold.from_state(json.loads(json.dumps(one.to_state())))
    for s in rng.standard_normal(100):
        assert restored.classify(s) == one.classify(s)
        restored.update(s)
        one.update(s)
    assert restored.to_state() == one.to_state()


def test_flag_many_warm_up_starts_flagging_at_record_min_samples():
    """As with the former per-record threshold: no flag among the first min_samples scores, and the
    record min_samples (0-based) can be flagged even inside the first batch."""
    scores = np.concatenate([np.zeros(100), [1.0, 5.0, -1.0]])
    t = NLLThreshold(q=0.9, min_samples=100)
    assert t.flag_many(scores).tolist() == [False] * 100 + [True, True, False]
    t = NLLThreshold(q=0.9, min_samples=100)
    assert not t.flag_many(np.full(99, 1e9)).any()
    assert t.flag_many(np.array([-5.0, 2e9])).tolist() == [False, True]


def test_flag_many_handles_infinite_and_huge_scores():
    t = NLLThreshold(q=0.5, min_samples=3)
    flags = t.flag_many(np.array([np.inf, np.inf, np.nan, np.inf, 1e300, np.nan, -np.inf]))
    assert flags.tolist() == [False, False, False, True, False, False, False]
    assert t.threshold_ == 1e300 and t.sketch.n == 1 and t.sketch.n_pos_inf_ == 3
    assert t.flag_many(np.array([np.inf, 1e301, 1e299, -1e3])).tolist() == [True, True, False, False]
    fixed = NLLThreshold(q=None, threshold=10.0)
    assert fixed.flag_many(np.array([np.inf, 10.0, 10.5, np.nan, -np.inf])).tolist() == \
        [True, False, True, False, False]
    assert fixed.classify(math.inf) and not fixed.classify(math.nan)
    warm = NLLThreshold(q=0.9, min_samples=10)
    assert not warm.classify(math.inf)                    # no threshold yet


def test_threshold_merge_and_old_state_format():
    rng = np.random.RandomState(5)
    a, b = NLLThreshold(q=0.95), NLLThreshold(q=0.95)
    a.flag_many(rng.standard_normal(3000))
    b.flag_many(rng.standard_normal(2000) + 1.0)
    a.merge(b)
    assert a.n_seen_ == 5000 and a.sketch.n == 5000
    with pytest.raises(ValueError, match=r"different settings .* \(0.95, None, 100, 200\) and "
                                         r"\(0.9, None, 100, 200\)"):
        a.merge(NLLThreshold(q=0.9))
    with pytest.raises(ValueError, match="format 1, expected 2 \\(River P² markers"):
        NLLThreshold.from_state({"format": 1, "q": 0.9})
    with pytest.raises(ValueError, match=r"scores must be a 1-d array .* got shape \(2, 2\)"):
        a.flag_many(np.zeros((2, 2)))


def test_sklearn_detector_fit_threshold_is_the_training_quantile():
    rng = np.random.RandomState(6)
    X = rng.normal(size=(3000, 2))
    det = GMMOutlierDetector(OnlineGaussianMixture(n_components=1), contamination=0.05).fit(X)
    nll = -det.score_samples(X)
    rank = np.mean(nll <= det.threshold_.threshold_)
    assert abs(rank - 0.95) <= 0.25 * 0.05 and det.threshold_.n_seen_ == 3000


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
    assert model.nll_one(x0) == 0.0
    model.learn_one(dict(zip("abc", X[0])))
    assert model.nll_one(x0) == 0.0          # fewer than two records: no provisional model
    for row in X[1:]:
        model.learn_one(dict(zip("abc", row)))
    assert model.params_ is None               # still warming up
    var = X.var(axis=0) + 1e-3
    x = np.array([0.1, 4.0, -1.2])
    expected = 0.5 * np.sum((x - X.mean(axis=0)) ** 2 / var + np.log(2 * np.pi * var))
    assert model.nll_one(x0) == pytest.approx(expected, rel=1e-9)
    # a missing feature: the exact marginal of the provisional Gaussian
    expected_ab = 0.5 * np.sum(((x - X.mean(axis=0)) ** 2 / var + np.log(2 * np.pi * var))[:2])
    assert model.nll_one({"a": 0.1, "b": 4.0}) == pytest.approx(expected_ab, rel=1e-9)
    import pandas as pd
    frame = pd.DataFrame([x0])
    assert model.nll_many(frame).iloc[0] == pytest.approx(expected, rel=1e-9)
    assert model.nll_one({"a": 0.0, "b": 5.0, "c": -1.0}) < model.nll_one({"a": 6.0, "b": 5.0, "c": -1.0})
