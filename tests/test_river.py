"""Tests of the River learners (online_gmm.river) and the exact marginals (online_gmm._marginal)."""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pandas as pd
import pytest
import river.checks
from river import compose, preprocessing
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from _params import dense_cov as _dense_cov
from _params import random_params as _random_params
from online_gmm._em import Scorer
from online_gmm._marginal import MarginalCache, RowScorer, marginal_params
from online_gmm.river import GMMAnomalyDetector, OnlineGMM

CTYPES = ["full", "tied", "diag", "spherical"]


def _stream(n=300, d=6, seed=0, outliers=0.03):
    """Three blobs with injected outliers: a list of (dict, is_outlier)."""
    rng = np.random.RandomState(seed)
    centres = rng.normal(0, 4, (3, d))
    X = centres[rng.randint(3, size=n)] + rng.normal(size=(n, d))
    y = rng.rand(n) < outliers
    X[y] += rng.normal(0, 12, (int(y.sum()), d))
    return [({f"f{j}": float(v) for j, v in enumerate(row)}, bool(t)) for row, t in zip(X, y)]




def _scipy_marginal_logpdf(params, x, idx):
    """log p(x[idx]) of the mixture, by scipy on the observed sub-vector."""
    idx = np.asarray(idx)
    terms = [np.log(w) + multivariate_normal(params.means[k, idx],
                                             _dense_cov(params, k)[np.ix_(idx, idx)]).logpdf(x[idx])
             for k, w in enumerate(params.weights)]
    return float(logsumexp(terms))


# ----------------------------------------------------------------------------- River's check suite
def _offline_datasets(model, scale=1):
    # River's generator gives no dataset to a Clusterer and a 150 MB download (CreditCard) to an
    # anomaly detector; the same checks run here on an offline stream with labelled outliers.
    yield _stream(n=300 * scale)


def _river_checks():
    for cls in (OnlineGMM, GMMAnomalyDetector):
        for i, params in enumerate(cls._unit_test_params()):
            model = cls(**params)
            for check in river.checks.yield_checks(model):
                yield pytest.param(model, check, id=f"{cls.__name__}-{i}-{check.__name__}")


@pytest.fixture()
def offline_datasets(monkeypatch):
    monkeypatch.setattr(river.checks, "_yield_datasets", _offline_datasets)


def test_river_check_suite(offline_datasets):
    """Every check of river.checks.yield_checks passes (none skipped: _unit_test_skips is empty)."""
    n = 0
    for cls in (OnlineGMM, GMMAnomalyDetector):
        for params in cls._unit_test_params():
            model = cls(**params)
            assert model._unit_test_skips() == set()
            for check in river.checks.yield_checks(model):
                check(model.clone())
                n += 1
    assert n > 50


def test_check_estimator_runs(offline_datasets):
    river.checks.check_estimator(GMMAnomalyDetector(n_components=2, warm_up=60, update_every=8, seed=0))


# ----------------------------------------------------------------------------- conventions
def test_prediction_before_learning_is_defined():
    model = OnlineGMM(n_components=3)
    x = {"a": 1.0, "b": 2.0}
    assert model.predict_one(x) == 0
    assert model.predict_proba_one(x) == {0: 1 / 3, 1: 1 / 3, 2: 1 / 3}
    assert model.score_one(x) == 0.0
    X = pd.DataFrame([x, x])
    assert model.predict_many(X).tolist() == [0, 0]
    assert model.score_many(X).tolist() == [0.0, 0.0]
    assert GMMAnomalyDetector().score_one(x) == 0.0
    # during the warm-up too
    model.learn_one(x)
    assert model.params_ is None and model.score_one(x) == 0.0 and model.predict_one(x) == 0


def test_no_mutation_and_no_reference_kept():
    model = OnlineGMM(n_components=2, warm_up=40, update_every=4, seed=0)
    stream = _stream(n=80)
    for x, _ in stream:
        before = copy.deepcopy(x)
        model.score_one(x)
        model.predict_proba_one(x)
        model.learn_one(x)
        assert x == before
    snapshot = pickle.dumps(model)
    for x, _ in stream:
        for k in x:
            x[k] = 1e9
    assert pickle.dumps(model) == snapshot


def test_constructor_validation_names_the_parameter():
    with pytest.raises(ValueError, match=r"update_every must be an int >= 1, got 0"):
        OnlineGMM(update_every=0)
    with pytest.raises(ValueError, match=r"covariance_type must be one of .* got 'ful'"):
        OnlineGMM(covariance_type="ful")
    with pytest.raises(ValueError, match=r"alpha must be a finite number >= 0.5 and <= 1.0, got 2"):
        OnlineGMM(alpha=2)


def test_clone_and_repr_round_trip():
    model = OnlineGMM(n_components=4, covariance_type="diag", update_every=7, seed=3)
    assert repr(model.clone()) == repr(model)
    assert model.clone().update_every == 7
    for x, _ in _stream(n=50):
        model.learn_one(x)
    assert model.clone().n_learned_ == 0


def test_pickle_after_predictions_round_trips():
    model = OnlineGMM(n_components=2, warm_up=40, update_every=8, seed=0)
    stream = _stream(n=120)
    for x, _ in stream:
        model.learn_one(x)
        model.score_one({"f0": x["f0"]})          # a marginal is cached too
    loaded = pickle.loads(pickle.dumps(model))
    for x, _ in stream[:10]:
        assert loaded.score_one(x) == model.score_one(x)
        assert loaded.predict_one(x) == model.predict_one(x)


# ----------------------------------------------------------------------------- batching
@pytest.mark.parametrize("ctype", CTYPES)
@pytest.mark.parametrize("update_every", [1, 16, 50])
@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("learn_incomplete", [True, False])
def test_learn_many_equals_learn_one(ctype, update_every, standardize, learn_incomplete):
    stream = [x for x, _ in _stream(n=400, seed=1)]
    stream[7] = {**stream[7], "f2": None}              # during the warm-up: skipped by both
    stream[300] = {**stream[300], "f3": math.nan}      # after it: learned (learn_incomplete=True)
    stream[150] = {k: v for k, v in stream[150].items() if k not in ("f0", "f1")}
    stream[200] = {**stream[200], "f5": None}
    stream[151] = {k: None for k in stream[151]}       # nothing observed: skipped by both
    one = OnlineGMM(n_components=3, covariance_type=ctype, warm_up=100,
                    update_every=update_every, standardize=standardize, seed=0,
                    learn_incomplete=learn_incomplete)
    many = one.clone()
    for x in stream:
        one.learn_one(x)
    frame = pd.DataFrame(stream)
    for a, b in [(0, 5), (5, 123), (123, 301), (301, 400)]:   # chunks that cut across updates
        many.learn_many(frame.iloc[a:b])
    learned = 3 if learn_incomplete else 0
    assert one.n_learned_ == many.n_learned_ == 395 + learned
    assert one.n_incomplete_ == many.n_incomplete_ == 5
    assert one.n_incomplete_learned_ == many.n_incomplete_learned_ == learned
    assert one.n_incomplete_skipped_ == many.n_incomplete_skipped_ == 5 - learned
    assert one.n_pending_ == many.n_pending_
    assert one.online_.n_updates == many.online_.n_updates
    for name in ("weights", "means", "precisions_cholesky"):
        np.testing.assert_allclose(getattr(one.params_, name), getattr(many.params_, name),
                                   rtol=1e-10, atol=1e-12)
    test = pd.DataFrame(stream[:40])
    assert one.predict_many(test).tolist() == [many.predict_one(x) for x in stream[:40]]
    np.testing.assert_allclose(one.score_many(test), [many.score_one(x) for x in stream[:40]],
                               rtol=1e-9)


def test_updates_become_visible_every_update_every_records():
    stream = [x for x, _ in _stream(n=200)]
    model = OnlineGMM(n_components=2, warm_up=64, update_every=16, seed=0)
    for x in stream[:64]:
        model.learn_one(x)
    assert model.params_ is not None and model.n_pending_ == 0
    probe = stream[100]
    first = model.score_one(probe)
    for x in stream[64:79]:                            # 15 records: still buffered
        model.learn_one(x)
    assert model.n_pending_ == 15 and model.score_one(probe) == first
    model.learn_one(stream[79])                        # the 16th applies the update
    assert model.n_pending_ == 0 and model.score_one(probe) != first
    second = model.score_one(probe)
    model.learn_one(stream[80])
    model.flush()                                      # a partial batch on demand
    assert model.n_pending_ == 0 and model.score_one(probe) != second


# ----------------------------------------------------------------------------- standardize
def _scaled_rows(n=400, seed=0):
    """Three blobs in 3 features on very different scales and offsets, shape (n, 3)."""
    rng = np.random.RandomState(seed)
    X = rng.normal(0, 3, (3, 3))[rng.randint(3, size=n)] + rng.normal(size=(n, 3))
    return X * [1e3, 1.0, 1e-3] + [1e6, -2.0, 5.0]


def _dicts(X):
    return [dict(zip("abc", map(float, row))) for row in X]


def test_standardize_freezes_the_warm_up_scale_and_scores_in_raw_units():
    X = _scaled_rows()
    model = GMMAnomalyDetector(n_components=3, covariance_type="full", warm_up=64, update_every=8,
                               reg_covar=1e-2, standardize=True, seed=0)
    for x in _dicts(X):
        model.learn_one(x)
    np.testing.assert_allclose(model.shift_, X[:64].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(model.scale_, X[:64].std(axis=0), rtol=1e-10)
    z = (X[:50] - model.shift_) / model.scale_
    log_det = np.log(model.scale_).sum()
    expected = -Scorer(model.params_).score_samples(z) + log_det
    got = [model.nll_one(x) for x in _dicts(X[:50])]
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    frame = pd.DataFrame(_dicts(X[:50]))
    np.testing.assert_allclose(model.nll_many(frame), expected, rtol=1e-9)
    # a missing feature: the exact marginal, with the Jacobian of the observed features only
    marg = marginal_params(model.params_, [0, 2])
    want = -Scorer(marg).score_samples(z[:1, [0, 2]])[0] + np.log(model.scale_[[0, 2]]).sum()
    assert model.nll_one({"a": X[0, 0], "c": X[0, 2]}) == pytest.approx(want, rel=1e-9)
    # predictions are those of the standardised record
    assert [model.predict_one(x) for x in _dicts(X[:50])] == \
        Scorer(model.params_).weighted_log_prob(z).argmax(axis=1).tolist()
    proba = model.predict_proba_many(frame).to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(proba[3], list(model.predict_proba_one(_dicts(X)[3]).values()),
                               rtol=1e-9)


@pytest.mark.parametrize("standardize", [True, False])
def test_standardize_makes_scores_equivariant_to_feature_units(standardize):
    """Rescaling features shifts every score by the log of the Jacobian, before and after the fit;
    without standardize the absolute reg_covar breaks this (the test is not vacuous)."""
    X = _scaled_rows(n=300, seed=1)
    factor = np.array([1e-3, 7.0, 1e4])
    Y = X * factor + [-1e3, 3.0, 0.0]
    kw = {"n_components": 2, "covariance_type": "diag", "warm_up": 80, "update_every": 8,
          "reg_covar": 1e-2, "standardize": standardize, "seed": 0}
    a, b = GMMAnomalyDetector(**kw), GMMAnomalyDetector(**kw)
    diffs, calibrated = [], []
    for x, y in zip(_dicts(X), _dicts(Y)):
        diffs.append(a.nll_one(x) - b.nll_one(y))
        calibrated.append((a.score_one(x), b.score_one(y)))
        a.learn_one(x)
        b.learn_one(y)
    diffs = np.array(diffs[2:])                       # the first two scores are 0.0
    calibrated = np.array(calibrated[2:])
    if standardize:
        np.testing.assert_allclose(diffs, -np.log(factor).sum(), rtol=1e-6)   # p(y) = p(x) / prod(factor)
        # the calibrated score does not depend on the units at all
        np.testing.assert_allclose(calibrated[:, 0], calibrated[:, 1], rtol=1e-6, atol=1e-9)
    else:
        assert np.ptp(diffs) > 1.0


def test_standardize_provisional_scores_and_constant_features():
    rng = np.random.RandomState(4)
    X = rng.normal(size=(30, 3)) * [2.0, 0.5, 1.0] + [1.0, -3.0, 0.0]
    X[:, 2] = 4.0                                     # constant during the warm-up
    model = GMMAnomalyDetector(n_components=2, warm_up=40, update_every=8, reg_covar=0.1,
                               standardize=True, seed=0)
    for x in _dicts(X):
        model.learn_one(x)
    assert model.params_ is None and model.scale_ is None
    sd = X.std(axis=0)
    sd[2] = sd[:2].mean()                             # no scale of its own: the others' mean
    var = X.var(axis=0) + 0.1 * sd ** 2               # reg_covar relative to each scale
    x = np.array([0.5, -2.0, 4.5])
    expected = 0.5 * np.sum((x - X.mean(axis=0)) ** 2 / var + np.log(2 * np.pi * var))
    assert model.nll_one(dict(zip("abc", x))) == pytest.approx(expected, rel=1e-9)
    more = rng.normal(size=(10, 3)) * [2.0, 0.5, 1.0] + [1.0, -3.0, 0.0]
    more[:, 2] = 4.0
    for row in _dicts(more):
        model.learn_one(row)
    W = np.vstack([X, more])
    np.testing.assert_allclose(model.scale_[:2], W[:, :2].std(axis=0), rtol=1e-10)
    assert model.scale_[2] == pytest.approx(model.scale_[:2].mean(), rel=1e-12)
    assert math.isfinite(model.nll_one(dict(zip("abc", [1.0, -3.0, 9.0]))))


def test_standardize_validation_and_pickle():
    with pytest.raises(ValueError, match=r"standardize must be True or False, got 'yes'"):
        OnlineGMM(standardize="yes")
    model = OnlineGMM(n_components=2, warm_up=40, update_every=8, standardize=True, seed=0)
    stream = _dicts(_scaled_rows(n=100))
    for x in stream:
        model.learn_one(x)
    loaded = pickle.loads(pickle.dumps(model))
    for x in stream[:10]:
        assert loaded.score_one(x) == model.score_one(x)
        assert loaded.predict_proba_one(x) == model.predict_proba_one(x)
    loaded.learn_one(stream[0])
    model.learn_one(stream[0])
    np.testing.assert_array_equal(loaded.scale_, model.scale_)


# ----------------------------------------------------------------------------- marginals
@pytest.mark.parametrize("ctype", CTYPES)
def test_marginal_params_match_scipy(ctype):
    params = _random_params(ctype, k=3, d=5, seed=4)
    x = np.random.RandomState(1).normal(0, 2, 5)
    for idx in ([0], [1, 3], [4, 0, 2], [0, 1, 2, 3, 4]):
        marg = marginal_params(params, idx)
        got = Scorer(marg).score_samples(x[idx][None])[0]
        assert got == pytest.approx(_scipy_marginal_logpdf(params, x, idx), rel=1e-10, abs=1e-10)


def test_marginal_params_validates_the_index():
    params = _random_params("full")
    with pytest.raises(ValueError, match="distinct feature indices in \\[0, 4\\), got \\[1, 1\\]"):
        marginal_params(params, [1, 1])
    with pytest.raises(ValueError, match="at least one feature"):
        marginal_params(params, [])


@pytest.mark.parametrize("ctype", CTYPES)
def test_row_scorer_matches_scorer(ctype):
    params = _random_params(ctype, k=4, d=6, seed=2)
    X = np.random.RandomState(0).normal(0, 3, (20, 6)) + 1e3   # offset data keeps its digits
    params.means += 1e3
    params._prepared = None
    ref = Scorer(params).weighted_log_prob(X)
    rs = RowScorer(params)
    assert rs._row is not None, "the one-row fast path no longer matches the kernels' prepared arrays"
    got = np.array([rs.weighted_log_prob(row).copy() for row in X])
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose([RowScorer.log_sum(r) for r in got], logsumexp(ref, axis=1), rtol=1e-12)


def test_marginal_cache_is_bounded():
    params = _random_params("full", d=6)
    cache = MarginalCache(params, max_size=3)
    masks = [np.arange(6) != j for j in range(6)]
    for m in masks:
        cache.get(m)
    assert len(cache) == 3


@pytest.mark.parametrize("ctype", CTYPES)
def test_missing_features_are_marginalised(ctype):
    stream = [x for x, _ in _stream(n=300, seed=2)]
    model = GMMAnomalyDetector(n_components=3, covariance_type=ctype, warm_up=150, update_every=32,
                               seed=0)
    for x in stream:
        model.learn_one(x)
    params = model.params_
    keys = model.features_
    x = stream[5]
    full = np.array([x[k] for k in keys])
    for drop in (["f1"], ["f0", "f4"], ["f5", "f2", "f3"]):
        partial = {k: v for k, v in x.items() if k not in drop}
        idx = [i for i, k in enumerate(keys) if k not in drop]
        expected = -_scipy_marginal_logpdf(params, full, idx)
        assert model.nll_one(partial) == pytest.approx(expected, rel=1e-9)
        # None and NaN mean missing, exactly as an absent key
        assert model.nll_one({**x, **{k: None for k in drop}}) == model.nll_one(partial)
        assert model.nll_one({**x, **{k: math.nan for k in drop}}) == model.nll_one(partial)
        many = model.nll_many(pd.DataFrame([partial], columns=keys))
        assert many.iloc[0] == pytest.approx(expected, rel=1e-9)
    # no observed feature: log p = 0, responsibilities = mixing weights
    assert model.nll_one({}) == 0.0
    clusterer = OnlineGMM(**model._get_params())
    for x in stream:
        clusterer.learn_one(x)
    proba = clusterer.predict_proba_one({"unknown": 1.0})
    np.testing.assert_allclose(list(proba.values()), clusterer.params_.weights)


def test_unseen_features_are_ignored_and_incomplete_records_counted():
    stream = [x for x, _ in _stream(n=200)]
    model = OnlineGMM(n_components=2, warm_up=60, update_every=8, seed=0)
    for x in stream:
        model.learn_one(x)
    x = stream[3]
    assert model.score_one({**x, "new": 123.0}) == model.score_one(x)
    assert model.predict_one({**x, "new": 123.0}) == model.predict_one(x)
    n = model.n_learned_
    model.learn_one({k: v for k, v in x.items() if k != "f0"})
    model.learn_one({**x, "f1": "text"})
    model.learn_one({"new": 1.0})                      # nothing of the schema observed: skipped
    assert model.n_learned_ == n + 2 and model.n_incomplete_ == 3
    assert model.n_incomplete_learned_ == 2 and model.n_incomplete_skipped_ == 1
    assert model.features_ == [f"f{j}" for j in range(6)]
    old = OnlineGMM(n_components=2, warm_up=60, update_every=8, seed=0, learn_incomplete=False)
    for x in stream:
        old.learn_one(x)
    n = old.n_learned_
    old.learn_one({k: v for k, v in x.items() if k != "f0"})
    old.learn_one({**x, "f1": "text"})
    assert old.n_learned_ == n and old.n_incomplete_ == old.n_incomplete_skipped_ == 2


def test_schema_ignores_dict_order():
    stream = [x for x, _ in _stream(n=150)]
    a = OnlineGMM(n_components=2, warm_up=60, update_every=8, seed=0)
    b = a.clone()
    for x in stream:
        a.learn_one(x)
        b.learn_one(dict(reversed(list(x.items()))))
    assert a.features_ == b.features_
    assert a.score_one(stream[0]) == b.score_one(stream[0])


# ----------------------------------------------------------------------------- composition
def test_anomaly_detector_in_a_pipeline_after_a_scaler():
    stream = _stream(n=600, seed=3)
    pipe = compose.Pipeline(preprocessing.StandardScaler(),
                            GMMAnomalyDetector(n_components=3, warm_up=200, update_every=16, seed=0))
    scores, labels = [], []
    for x, y in stream:
        scores.append(pipe.score_one(x))
        pipe.learn_one(x)
        labels.append(y)
    from sklearn.metrics import roc_auc_score
    assert pipe["GMMAnomalyDetector"].n_learned_ == 600
    assert roc_auc_score(labels[200:], scores[200:]) > 0.9


# ----------------------------------------------------------------------------- River's score scale
def _fitted_detector(stream, **kw):
    params = {"n_components": 3, "warm_up": 150, "update_every": 16, "seed": 0, **kw}
    model = GMMAnomalyDetector(**params)
    for x in stream:
        model.learn_one(x)
    return model


def test_scores_are_on_rivers_scale_for_its_rocauc_and_beat_halfspacetrees():
    """River's ROCAUC spreads its thresholds over [0, 1]: on -log p (the former score_one) it read
    about 0.0004 where scikit-learn's ROC-AUC was 0.9999. Prequential loop on a stream of three blobs
    with 3% outliers, HalfSpaceTrees (River's recipe: MinMaxScaler first) on the same stream."""
    from river import anomaly, metrics
    from sklearn.metrics import roc_auc_score
    stream = _stream(n=3000, seed=11)
    gmm = GMMAnomalyDetector(n_components=3, warm_up=150, update_every=16, seed=0)
    hst = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=0))
    auc = {"gmm": metrics.ROCAUC(), "hst": metrics.ROCAUC()}
    scores, labels = [], []
    for x, y in stream:
        for name, model in (("gmm", gmm), ("hst", hst)):
            score = model.score_one(x)
            model.learn_one(x)
            auc[name].update(y, score)
            if name == "gmm":
                assert 0.0 <= score <= 1.0
                scores.append(score)
        labels.append(y)
    assert auc["gmm"].get() > 0.9 and auc["gmm"].get() > auc["hst"].get() + 0.05
    assert roc_auc_score(labels, scores) > 0.97
    # finer thresholds agree with scikit-learn's exact ROC-AUC on the same scores
    fine = metrics.ROCAUC(n_thresholds=1000)
    for y, s in zip(labels, scores):
        fine.update(y, s)
    assert fine.get() == pytest.approx(roc_auc_score(labels, scores), abs=0.01)


def test_score_is_the_models_own_cdf_of_the_nll():
    """One full Gaussian: -log p(x) - (-log p(mean)) is half a chi-square with D degrees of freedom
    under the model, so the score must be chi2.cdf(2 (nll - nll_mode), D), up to the sampling error
    of 1000 draws; over the observed features of an incomplete record, with their count."""
    from scipy.stats import chi2
    rng = np.random.RandomState(0)
    X = rng.multivariate_normal([0.0, 1.0, -2.0, 3.0], np.diag([1.0, 4.0, 0.25, 1.0]) + 0.5, 2000)
    model = GMMAnomalyDetector(n_components=1, warm_up=200, update_every=16, seed=0)
    for row in X:
        model.learn_one(dict(zip("abcd", row)))
    mean = dict(zip("abcd", model.params_.means[0]))
    mode = model.nll_one(mean)
    test = rng.multivariate_normal([0.0, 1.0, -2.0, 3.0], np.diag([1.0, 4.0, 0.25, 1.0]) + 0.5, 300)
    for row in test[:100]:
        x = dict(zip("abcd", row))
        assert model.score_one(x) == pytest.approx(chi2.cdf(2 * (model.nll_one(x) - mode), 4), abs=0.04)
        part = {"a": x["a"], "c": x["c"]}
        mode_ac = model.nll_one({"a": mean["a"], "c": mean["c"]})
        assert model.score_one(part) == pytest.approx(
            chi2.cdf(2 * (model.nll_one(part) - mode_ac), 2), abs=0.04)
    # before the warm-up fit: the provisional diagonal Gaussian, calibrated without sampling
    early = GMMAnomalyDetector(n_components=1, covariance_type="diag", warm_up=5000, seed=0)
    for row in X[:, [0, 1]] * [1.0, 3.0]:
        early.learn_one(dict(zip("ab", row)))
    assert early.params_ is None
    centre = early.nll_one(dict(zip("ab", (X[:, [0, 1]] * [1.0, 3.0]).mean(axis=0))))
    for row in test[:50, [0, 1]] * [1.0, 3.0]:
        x = dict(zip("ab", row))
        assert early.score_one(x) == pytest.approx(chi2.cdf(2 * (early.nll_one(x) - centre), 2),
                                                   abs=0.04)
    # so about 1% of the records the model describes score above 0.99, 10% above 0.9
    scores = np.array([model.score_one(dict(zip("abcd", row))) for row in test])
    assert 0.05 <= np.mean(scores > 0.9) <= 0.16 and np.mean(scores > 0.99) <= 0.03


@pytest.mark.parametrize("ctype", CTYPES)
def test_score_is_strictly_increasing_in_the_nll_and_keeps_the_far_tail_apart(ctype):
    stream = [x for x, _ in _stream(n=600, seed=4)]
    model = _fitted_detector(stream, covariance_type=ctype)
    keys = model.features_
    records = [stream[i] for i in range(0, 600, 7)]
    # a ray out to the largest floats: far beyond every calibration draw
    records += [{k: v * (j + 1) for j, k in enumerate(keys)} for v in
                (20.0, 50.0, 1e2, 1e3, 1e4, 1e5, 1e6)]
    nll = np.array([model.nll_one(x) for x in records])
    score = np.array([model.score_one(x) for x in records])
    order = np.argsort(nll)
    assert np.all(np.diff(score[order]) > 0)          # strictly increasing (distinct NLLs)
    assert score.min() > 0.0 and score.max() < 1.0
    assert np.all(score[-7:] > 0.999) and len(set(score[-7:].tolist())) == 7
    with np.errstate(all="ignore"):
        assert model.score_one({k: 1e300 for k in keys}) == 1.0   # -log p = inf
    assert model.score_one({}) == 0.0 and GMMAnomalyDetector().score_one(stream[0]) == 0.0


def test_scores_are_deterministic_and_scoring_never_changes_the_model():
    stream = [x for x, _ in _stream(n=500, seed=5)]
    a = GMMAnomalyDetector(n_components=2, warm_up=100, update_every=8, seed=3)
    b = a.clone()
    probe = stream[:20]
    for i, x in enumerate(stream):
        a.score_one(x)                                # a scores every record, b only some
        a.learn_one(x)
        if i % 97 == 0:
            b.score_many(pd.DataFrame(probe))
        b.learn_one(x)
    assert [a.score_one(x) for x in probe] == [b.score_one(x) for x in probe]
    loaded = pickle.loads(pickle.dumps(a))
    assert [loaded.score_one(x) for x in probe] == [a.score_one(x) for x in probe]
    other = GMMAnomalyDetector(n_components=2, warm_up=100, update_every=8, seed=4)
    for x in stream:
        other.learn_one(x)
    assert [other.score_one(x) for x in probe] != [a.score_one(x) for x in probe]


@pytest.mark.parametrize("warm", [True, False])
def test_score_many_equals_score_one_with_missing_features(warm):
    stream = [x for x, _ in _stream(n=400, seed=6)]
    model = GMMAnomalyDetector(n_components=2, warm_up=100 if warm else 1000, update_every=8, seed=0)
    for x in stream:
        model.learn_one(x)
    assert (model.params_ is not None) == warm
    rows = [stream[i] for i in range(30)]
    rows = [{k: (None if (i + j) % 4 == 0 else v) for j, (k, v) in enumerate(x.items())}
            for i, x in enumerate(rows)] + [{}]
    frame = pd.DataFrame(rows, columns=model.features_)
    np.testing.assert_allclose(model.score_many(frame), [model.score_one(x) for x in rows],
                               rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(model.nll_many(frame), [model.nll_one(x) for x in rows], rtol=1e-9)


def test_rivers_quantile_and_threshold_filters_on_the_calibrated_score():
    """River's filters protect the detector by default (flagged records are not learned). A fixed
    threshold then needs a model first (River issue #948: protected from the first record, the
    records unlike the first few are never learned), so the ThresholdFilter wraps a detector
    that learned the first 300 records; River's ThresholdFilter with protect_anomaly_detector=False
    learns nothing (River 0.26), so that is not an option."""
    from river import anomaly
    stream = _stream(n=3000, seed=7)
    det = anomaly.QuantileFilter(GMMAnomalyDetector(n_components=3, warm_up=150, update_every=16,
                                                    seed=0), q=0.97)
    inner = GMMAnomalyDetector(n_components=3, warm_up=150, update_every=16, seed=0)
    for x, _ in stream[:300]:
        inner.learn_one(x)
    fixed = anomaly.ThresholdFilter(inner, threshold=0.999)
    flags = {"q": [], "t": []}
    labels = []
    for i, (x, y) in enumerate(stream):
        for name, f in (("q", det), ("t", fixed)):
            if name == "t" and i < 300:
                flags[name].append(False)
                continue
            flags[name].append(f.classify(f.score_one(x)))
            f.learn_one(x)
        labels.append(y)
    labels = np.array(labels[300:])
    for name in flags:
        flagged = np.array(flags[name][300:])
        recall = flagged[labels].mean()
        precision = labels[flagged].mean()
        assert recall > 0.9 and precision > 0.6, (name, recall, precision)


def test_negative_log_likelihood_of_a_detector_or_a_pipeline():
    from river import anomaly
    from online_gmm.river import negative_log_likelihood
    stream = [x for x, _ in _stream(n=300, seed=8)]
    pipe = compose.Pipeline(preprocessing.StandardScaler(),
                            GMMAnomalyDetector(n_components=2, warm_up=100, update_every=8, seed=0))
    for x in stream:
        pipe.learn_one(x)
    det = pipe["GMMAnomalyDetector"]
    z = pipe["StandardScaler"].transform_one(stream[0])
    assert negative_log_likelihood(pipe, stream[0]) == det.nll_one(z) > 1.0
    assert negative_log_likelihood(det, z) == det.nll_one(z)
    assert pipe.score_one(stream[0]) == det.score_one(z) < 1.0
    hst = anomaly.HalfSpaceTrees(seed=0)
    assert negative_log_likelihood(hst, stream[0]) == hst.score_one(stream[0])


def test_the_river_scale_example_of_the_docs_runs_and_prints_what_the_docs_say(capsys):
    """docs/river-anomaly.md: the prequential loop with River's ROCAUC, GMM against HalfSpaceTrees
    on the breast-cancer stream; the block is run as written and its output compared."""
    import contextlib
    import io
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "docs" / "river-anomaly.md").read_text()
    section = text[text.index("### River's score scale"):]
    code, printed = re.findall(r"```python\n(.*?)```.*?```\n(.*?)```", section, re.S)[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/river-anomaly.md", "exec"), {})
    assert out.getvalue() == printed
    gmm, hst = (float(v) for v in re.findall(r"ROCAUC: ([\d.]+)%", printed)[:2])
    assert gmm > hst + 20
