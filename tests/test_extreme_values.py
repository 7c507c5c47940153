"""Extreme finite values (issue 14, points 2 and 3): scoring never overflows into a plausible value,
and no finite record can stop the model (it is kept out of the update, with a reason)."""

import warnings

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture
from sklearn.utils import check_random_state

from online_gmm._gaussian import KERNELS
from online_gmm._online import MAX_ABS, RefusedRecordsError, screen_extreme
from online_gmm.estimator import OnlineGaussianMixture

TYPES = sorted(KERNELS)
RAY = [1e10, 1e100, 1e150, 1e154, 1e155, 1e200, 1e300, 1.7e308]


@pytest.fixture(scope="module")
def fitted():
    X = np.random.RandomState(0).randn(2000, 3)
    out = {}
    for ctype in TYPES:
        ours = OnlineGaussianMixture(n_components=3, covariance_type=ctype, random_state=0).fit(X)
        ref = GaussianMixture(n_components=3, covariance_type=ctype, random_state=0).fit(X)
        out[ctype] = ours, ref
    return out


def _rays():
    """Rows along rays from the data: every feature at v, one feature at v, and their negatives."""
    rays = []
    for direction in (np.ones(3), np.array([1.0, 0.0, 0.0]), np.array([0.3, -1.0, 0.5])):
        for sign in (1.0, -1.0):
            rays.append(np.array([sign * v * direction for v in RAY]))
    return rays


@pytest.mark.parametrize("ctype", TYPES)
def test_log_density_decreases_to_the_largest_floats(fitted, ctype):
    ours, ref = fitted[ctype]
    for P in _rays():
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = ours.score_samples(P)
            want = ref.score_samples(P)
        assert not np.isnan(got).any()
        assert np.all(got[1:] <= got[:-1]), got          # non-increasing along the ray
        assert got[-1] == -np.inf or got[-1] < -1e300
        fin = np.isfinite(want)
        np.testing.assert_allclose(got[fin], want[fin], rtol=1e-9)
        # where scikit-learn overflows (-inf or NaN): -inf, or the exact value when it is finite
        assert np.all(got[~fin] < -1e307)


@pytest.mark.parametrize("ctype", TYPES)
def test_responsibilities_of_overflowing_rows_are_a_distribution(fitted, ctype):
    ours, _ = fitted[ctype]
    P = np.vstack(_rays())
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proba = ours.predict_proba(P)
        labels = ours.predict(P)
        log_p = ours.score_samples(P)
    assert not np.isnan(proba).any()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-9)
    lost = log_p == -np.inf
    assert lost.any()
    # the rule for zero-density rows: predict is predict_proba's argmax there too
    np.testing.assert_array_equal(labels[lost], proba[lost].argmax(axis=1))


def test_overflowing_rows_go_to_the_nearest_component_in_mahalanobis_distance():
    # two components, the second much wider along feature 0: far out along feature 0, it is nearer
    from online_gmm._em import GaussianParams, Scorer
    from online_gmm._gaussian import get_kernel
    cov = np.array([[1.0, 1.0], [100.0, 1.0]])
    params = GaussianParams("diag", np.array([0.9, 0.1]), np.zeros((2, 2)), cov,
                            get_kernel("diag").precision_cholesky(cov))
    X = np.array([[1e300, 0.0], [0.0, 1e300]])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        log_resp, log_p = Scorer(params).log_resp(X)
    assert np.all(log_p == -np.inf)
    assert np.exp(log_resp[0]).argmax() == 1          # the wide component
    np.testing.assert_allclose(np.exp(log_resp[1]), [0.5, 0.5])   # a tie: shared equally


def test_screen_extreme_names_the_row_feature_and_bound():
    X = np.zeros((4, 3))
    X[2, 1] = -1e308
    keep, refused = screen_extreme(X, np.array([10, 11, 12, 13]))
    np.testing.assert_array_equal(keep, [True, True, False, True])
    assert refused == [(12, ("value -1e+308 in feature 1 is too large for the model's arithmetic "
                             "(|x| > 1e+150)"))]
    assert screen_extreme(np.full((3, 2), MAX_ABS), np.arange(3)) == (None, [])


def _stream(value, row, d=4, n=6000, seed=0):
    X = np.random.RandomState(seed).randn(n, d)
    X[row] = value
    return X


def _online(ctype):
    model = OnlineGaussianMixture(n_components=3, covariance_type=ctype, random_state=0)
    return model._new_online(4, check_random_state(0))


@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.parametrize("value", [1e15, 1e100, 1e308, -1e308])
@pytest.mark.parametrize("row", [507, 2507])            # in the warm-up (2000 rows) and after it
def test_one_extreme_record_is_refused_and_the_rest_learned(ctype, value, row):
    X = _stream(value, row)
    online = _online(ctype)
    refused = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for a in range(0, len(X), 500):
            out, ref = online.score_then_learn(X[a: a + 500], ids=np.arange(a, a + 500))
            refused += ref
            if out is not None:
                assert not np.isnan(out[1]).any()
    assert online.initialised
    assert online.params.is_finite() and online.stats.is_finite()
    assert [i for i, _ in refused] in ([], [row])
    if abs(value) > MAX_ABS:
        assert [i for i, _ in refused] == [row]
        assert "too large for the model's arithmetic" in refused[0][1]
    assert online.n_seen == len(X) - len(refused)
    if refused:
        # the model equals that of the stream without the refused record
        clean = _online(ctype)
        Xc = np.delete(X, row, axis=0)
        ids = np.delete(np.arange(len(X)), row)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for a in range(0, len(X), 500):
                sel = (ids >= a) & (ids < a + 500)
                clean.score_then_learn(Xc[sel], ids=ids[sel])
        np.testing.assert_allclose(online.params.means, clean.params.means, rtol=1e-10, atol=1e-12)


def test_ill_defined_update_refuses_the_culprit_with_a_readable_reason():
    X = _stream(1e15, 2507)
    online = _online("full")
    refused = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for a in range(0, len(X), 500):
            refused += online.score_then_learn(X[a: a + 500], ids=np.arange(a, a + 500))[1]
    assert len(refused) == 1 and refused[0][0] == 2507
    assert refused[0][1].startswith("learning this record would make component ")
    assert "covariance ill-defined" in refused[0][1]
    assert "standard deviations from that component's mean" in refused[0][1]


def test_warm_up_culprit_from_an_earlier_call_is_reported_by_id_and_removed():
    X = _stream(1e15, 507)
    online = _online("tied")
    got = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for a in range(0, 2500, 500):
            got.append(online.score_then_learn(X[a: a + 500], ids=np.arange(a, a + 500) + 10**6))
            assert online.initialised == (a == 2000)
    assert [r[1] for r in got[:3]] == [[], [], []] and got[4][1] == []
    out, refused = got[3]                             # the warm-up fit failed in the fourth call
    assert out is None
    assert [i for i, _ in refused] == [10**6 + 507]
    assert "warm-up fit" in refused[0][1]
    # without the culprit, 1999 rows are buffered: the warm-up ends with the fifth call, as in a
    # stream without that record


def test_buffered_ids_survive_a_checkpoint():
    X = _stream(1e15, 507)
    online = _online("tied")
    online.score_then_learn(X[:1000], ids=np.arange(1000) + 7)
    arrays, meta = online.to_arrays()
    np.testing.assert_array_equal(arrays["buffer.ids"], np.arange(1000) + 7)
    restored = _online("tied")
    restored.load_arrays(arrays, meta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, refused = restored.score_then_learn(X[1000:2000], ids=np.arange(1000, 2000) + 7)
    assert [i for i, _ in refused] == [507 + 7]


def test_legacy_call_raises_and_leaves_the_state_unchanged():
    X = _stream(1e15, 2507)
    online = _online("full")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for a in range(0, 2500, 500):
            online.score_then_learn(X[a: a + 500])
        before = online.to_arrays()
        with pytest.raises(RefusedRecordsError, match="record 7: learning this record would make"):
            online.score_then_learn(X[2500:3000])
    after = online.to_arrays()
    assert before[1] == after[1]
    for name in before[0]:
        np.testing.assert_array_equal(before[0][name], after[0][name])


@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.parametrize("value,row", [(1e15, 2507), (1e308, 2507), (1e308, 507), (1e100, 1507)])
def test_partial_fit_names_the_rows_and_leaves_the_model_unchanged(ctype, value, row):
    X = _stream(value, row)
    model = OnlineGaussianMixture(n_components=3, covariance_type=ctype, random_state=0)
    failed = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for a in range(0, len(X), 500):
            batch = X[a: a + 500]
            seen = model.n_samples_seen_ if a else 0
            params = (model.means_.copy(), model.covariances_.copy()) if hasattr(model, "means_") else None
            try:
                model.partial_fit(batch)
            except ValueError as err:
                failed += 1
                assert f"rows [{row - a}] of X cannot be learned" in str(err)
                assert model.n_samples_seen_ == seen
                if params is not None:
                    np.testing.assert_array_equal(model.means_, params[0])
                    np.testing.assert_array_equal(model.covariances_, params[1])
                model.partial_fit(np.delete(batch, row - a, axis=0))
    assert failed <= 1
    if value > MAX_ABS:
        assert failed == 1
    assert np.isfinite(model.means_).all()
    assert np.isfinite(model.score_samples(X[:100])).all()


def test_fit_names_rows_too_large():
    X = _stream(-1e200, 12, n=300)
    with pytest.raises(ValueError, match=r"fit: rows \[12\] of X cannot be learned.*value -1e\+200 "
                                         r"in feature 0"):
        OnlineGaussianMixture(n_components=2).fit(X)


@pytest.mark.parametrize("ctype", TYPES)
def test_river_learners_skip_and_count_records_they_cannot_learn(ctype):
    from online_gmm.river import GMMAnomalyDetector, OnlineGMM
    X = np.random.RandomState(1).randn(3000, 3)
    for cls in (OnlineGMM, GMMAnomalyDetector):
        model = cls(n_components=3, covariance_type=ctype, seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i, r in enumerate(X):
                x = {"a": r[0], "b": r[1], "c": r[2]}
                if i in (150, 1500):                   # in the warm-up (100 records) and after it
                    x = {"a": 1e308, "b": -1e200, "c": 0.0}
                if i in (160, 1600):
                    x = {"a": 1e15, "b": 1e15, "c": 1e15}
                model.learn_one(x)                     # never raises
            model.flush()
        assert model.n_refused_ == 4
        assert model.online_.params.is_finite()
        scores = []
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for v in RAY:
                x = {"a": v, "b": -v, "c": 0.5 * v}
                scores.append(model.nll_one(x))
                if cls is GMMAnomalyDetector:          # River's scale: a probability
                    assert 0.0 <= model.score_one(x) <= 1.0
                if cls is OnlineGMM:
                    p = np.array(list(model.predict_proba_one(x).values()))
                    assert not np.isnan(p).any() and np.isclose(p.sum(), 1.0)
                    assert model.predict_one(x) == p.argmax()
        scores = np.array(scores)
        assert not np.isnan(scores).any()
        assert np.all(scores[1:] >= scores[:-1]) and scores[-1] == np.inf


def test_river_many_records_paths_never_give_nan():
    import pandas as pd

    from online_gmm.river import OnlineGMM
    X = np.random.RandomState(2).randn(600, 2)
    model = OnlineGMM(n_components=2, covariance_type="tied", seed=0)
    model.learn_many(pd.DataFrame(X, columns=["a", "b"]))
    df = pd.DataFrame({"a": [1.0, 1e100, 1e200, 1.7e308, 1e300], "b": [0.0, -1e100, 0.0, 1e308, None]})
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = model.score_many(df).to_numpy()
        proba = model.predict_proba_many(df).to_numpy()
        labels = model.predict_many(df).to_numpy()
    assert not np.isnan(scores).any() and np.all(scores[1:4] > 1e190)
    assert not np.isnan(proba).any()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(labels, proba.argmax(axis=1))


@pytest.mark.parametrize("ctype", TYPES)
def test_marginal_one_row_scoring_of_extreme_records(ctype):
    # an incomplete record is scored by the marginal over its observed features, on one row
    from online_gmm._marginal import RowScorer, marginal_params
    from tests._params import random_params
    params = random_params(ctype, k=3, d=4, seed=3)
    row = RowScorer(marginal_params(params, [0, 2]))
    prev = np.inf
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for v in RAY:
            wlp, log_p, resp = row.overflow_safe([v, -v])
            assert not np.isnan(wlp).any() and not np.isnan(resp).any()
            assert np.isclose(resp.sum(), 1.0)
            assert log_p <= prev
            fast = RowScorer.log_sum(row.weighted_log_prob([v, -v]))
            if np.isfinite(fast):
                assert np.isclose(fast, log_p, rtol=1e-9)
            prev = log_p
    assert prev == -np.inf


def test_partial_fit_drops_an_earlier_calls_culprit_from_the_warm_up_with_a_warning():
    X = _stream(1e15, 507)
    model = OnlineGaussianMixture(n_components=3, covariance_type="tied", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for a in range(0, 1500, 500):
            model.partial_fit(X[a: a + 500])
    with pytest.warns(UserWarning, match=r"records \[507\] of earlier calls .* dropped from the "
                                         r"warm-up buffer"):
        model.partial_fit(X[1500:2000])
    assert model.n_samples_seen_ == 1999
    model.partial_fit(X[2000:2500])                  # the warm-up ends as without that record
    assert np.isfinite(model.means_).all()


@pytest.mark.parametrize("ctype", TYPES)
def test_legitimate_heavy_data_is_not_refused(ctype):
    # a feature zero on 95% of the rows and around 1e7 on the rest, then a level shift of 1e3
    # standard deviations: nothing is refused
    rng = np.random.RandomState(4)
    X = rng.randn(6000, 4)
    rare = rng.rand(6000) < 0.05
    X[:, 0] = np.where(rare, 1e7 + 1e6 * rng.randn(6000), 0.0)
    X[4000:, 1:] += 1e3
    online = _online(ctype)
    refused = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for a in range(0, len(X), 500):
            refused += online.score_then_learn(X[a: a + 500], ids=np.arange(a, a + 500))[1]
    assert refused == []
    assert online.n_seen == len(X)
