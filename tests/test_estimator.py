"""OnlineGaussianMixture: agreement with scikit-learn, EM laws, online laws, robustness."""

import copy
import warnings

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.utils.estimator_checks import parametrize_with_checks

from online_gmm import ComponentReseededWarning, OnlineGaussianMixture, SufficientStatistics
from online_gmm._gaussian import KERNELS

TYPES = sorted(KERNELS)


def blobs(seed=0, n=600, d=3, k=3, spread=6.0):
    rng = np.random.RandomState(seed)
    centres = rng.normal(0, spread, size=(k, d))
    scales = rng.uniform(0.5, 1.5, size=(k, d))
    labels = rng.randint(k, size=n)
    return centres[labels] + rng.normal(size=(n, d)) * scales[labels], labels


def start_params(X, k, ctype, seed=0):
    """Starting parameters shared by both implementations."""
    gm = GaussianMixture(k, covariance_type=ctype, max_iter=1, random_state=seed).fit(X)
    return dict(weights_init=gm.weights_, means_init=gm.means_, precisions_init=gm.precisions_)


# ----------------------------------------------------------------------------- scikit-learn
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_fit_agrees_with_sklearn_given_starting_parameters(ctype, seed):
    X, _ = blobs(seed)
    kw = dict(n_components=3, covariance_type=ctype, tol=1e-8, max_iter=60, **start_params(X, 3, ctype, seed))
    ref = GaussianMixture(**kw).fit(X)
    ours = OnlineGaussianMixture(**kw).fit(X)
    for attr in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(ours, attr), getattr(ref, attr), rtol=1e-6, atol=1e-10,
                                   err_msg=attr)
    assert ours.n_iter_ == ref.n_iter_
    assert ours.converged_ == ref.converged_
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-10)
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(ours.bic(X), ref.bic(X), rtol=1e-10)
    np.testing.assert_allclose(ours.aic(X), ref.aic(X), rtol=1e-10)
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-9)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.parametrize("init", ["kmeans", "random"])
def test_fit_agrees_with_sklearn_from_same_random_state(ctype, init):
    """The same random_state draws the same n_init starts as scikit-learn and the best run wins.

    Two starts that reach the same optimum tie to a few ulps of the lower bound (with 'random'
    starts here, for spherical and full), and which of them wins is decided by rounding: then
    n_iter_ must be one of the tied runs'. scikit-learn's runs are replayed one at a time from
    one random stream, as its fit draws them."""
    X, _ = blobs(3)
    kw = dict(n_components=3, covariance_type=ctype, init_params=init, random_state=7, n_init=2, tol=1e-6)
    ref = GaussianMixture(**kw).fit(X)
    ours = OnlineGaussianMixture(**kw).fit(X)
    stream = np.random.RandomState(7)
    runs = [GaussianMixture(**dict(kw, n_init=1, random_state=stream)).fit(X) for _ in range(2)]
    best = max(r.lower_bound_ for r in runs)
    assert best == ref.lower_bound_                     # the replay draws what fit drew
    tied = {r.n_iter_ for r in runs if abs(r.lower_bound_ - best) <= 1e-12 * abs(best)}
    assert ref.n_iter_ in tied
    assert ours.n_iter_ in tied
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-9)
    np.testing.assert_allclose(np.sort(ours.weights_), np.sort(ref.weights_), rtol=1e-6)


@pytest.mark.parametrize("ctype", TYPES)
def test_max_iter_zero_keeps_starting_parameters(ctype):
    X, _ = blobs(2)
    p = start_params(X, 3, ctype)
    p_no_prec = {k: v for k, v in p.items() if k != "precisions_init"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # (scikit-learn 1.9 itself fails with max_iter=0 and precisions_init: compare without it)
        ref = GaussianMixture(3, covariance_type=ctype, max_iter=0, random_state=0, **p_no_prec).fit(X)
    ours = OnlineGaussianMixture(3, covariance_type=ctype, max_iter=0, random_state=0, **p_no_prec).fit(X)
    np.testing.assert_allclose(ours.precisions_cholesky_, ref.precisions_cholesky_, rtol=1e-10)
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-9)
    assert ours.n_iter_ == 0
    given = OnlineGaussianMixture(3, covariance_type=ctype, max_iter=0, **p).fit(X)
    np.testing.assert_allclose(given.precisions_, p["precisions_init"], rtol=1e-10)
    np.testing.assert_allclose(given.means_, p["means_init"])


_CHECK_REASONS = {
    "check_sample_weight_equivalence_on_dense_data": (
        "the k-means start draws different random numbers for weighted and repeated rows; the "
        "equivalence is exact from given starting parameters and is tested in "
        "test_sample_weight_two_equals_duplicated_rows"),
}


def _expected_failures(estimator):
    return _CHECK_REASONS


def _check_name(check) -> str:
    return getattr(check, "func", check).__name__


@parametrize_with_checks([OnlineGaussianMixture(n_components=2, warm_up=20)],
                         expected_failed_checks=_expected_failures)
def test_sklearn_compatible_estimator(estimator, check):
    if _check_name(check).startswith("check_array_api"):
        # the default k-means start raises NotImplementedError under array API dispatch, as
        # GaussianMixture's does: these checks run on a 'random_from_data' start below
        pytest.skip("array API checks run in test_sklearn_array_api_checks (init_params="
                    "'random_from_data'; k-means has no array API support)")
    check(estimator)


# scikit-learn runs these checks on GaussianMixture with the same parameters
# (sklearn.utils._test_common.instance_generator.PER_ESTIMATOR_CHECK_PARAMS)
@parametrize_with_checks([OnlineGaussianMixture(n_components=2, init_params="random_from_data",
                                                max_iter=5, n_init=2, warm_up=20)],
                         expected_failed_checks=_expected_failures)
def test_sklearn_array_api_checks(estimator, check, monkeypatch):
    if not _check_name(check).startswith("check_array_api"):
        pytest.skip("run by test_sklearn_compatible_estimator (default parameters)")
    # scikit-learn turns array API dispatch on only with it set (the estimator gives scipy NumPy
    # arrays only: scipy's own mode, read at its import, is not needed)
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    check(estimator)


# ----------------------------------------------------------------------------- EM laws
@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_em_log_likelihood_never_decreases(ctype, seed):
    X, _ = blobs(seed, k=4)
    gm = OnlineGaussianMixture(4, covariance_type=ctype, init_params="random", tol=0, max_iter=40,
                               random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(X)
    lb = np.asarray(gm.lower_bounds_)
    assert len(lb) == 40
    assert np.all(np.diff(lb) >= -1e-10 * np.abs(lb[1:]))


@pytest.mark.parametrize("ctype", TYPES)
def test_fit_predict_equals_fit_then_predict(ctype):
    X, _ = blobs(4)
    a = OnlineGaussianMixture(3, covariance_type=ctype, random_state=0).fit_predict(X)
    b = OnlineGaussianMixture(3, covariance_type=ctype, random_state=0).fit(X).predict(X)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("ctype", TYPES)
def test_sample_weight_two_equals_duplicated_rows(ctype):
    X, _ = blobs(5)
    rng = np.random.RandomState(0)
    twice = rng.rand(len(X)) < 0.3
    w = np.where(twice, 2.0, 1.0)
    Xdup = np.vstack([X, X[twice]])
    p = start_params(X, 3, ctype)
    a = OnlineGaussianMixture(3, covariance_type=ctype, tol=1e-9, **p).fit(X, sample_weight=w)
    b = OnlineGaussianMixture(3, covariance_type=ctype, tol=1e-9, **p).fit(Xdup)
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(a.lower_bound_, b.lower_bound_, rtol=1e-10)
    for attr in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(a, attr), getattr(b, attr), rtol=1e-8, atol=1e-12)
    # online: the same law for partial_fit
    kw = dict(covariance_type=ctype, warm_up=len(X) // 2, random_state=0, **p)
    c = OnlineGaussianMixture(3, **kw)
    d = OnlineGaussianMixture(3, **kw)
    c.partial_fit(X[:300]).partial_fit(X[300:], sample_weight=w[300:])
    d.partial_fit(X[:300]).partial_fit(np.vstack([X[300:], X[300:][twice[300:]]]))
    np.testing.assert_allclose(c.means_, d.means_, rtol=1e-8)
    np.testing.assert_allclose(c.stats_.scatter, d.stats_.scatter, rtol=1e-8)


@pytest.mark.parametrize("ctype", TYPES)
def test_merging_shard_models_equals_whole(ctype):
    """Map-reduce: statistics of shards under shared parameters, merged, equal the whole's."""
    X, _ = blobs(6)
    base = OnlineGaussianMixture(3, covariance_type=ctype, random_state=0).fit(X)
    params = base._params_
    from online_gmm._em import Scorer
    whole, _ = Scorer(params).expected_statistics(X)
    shards = [OnlineGaussianMixture.from_statistics(Scorer(params).expected_statistics(part)[0],
                                                    covariance_type=ctype)
              for part in np.array_split(X, 4)]
    merged = shards[0]
    for s in shards[1:]:
        merged = merged.merge(s)
    np.testing.assert_allclose(merged.stats_.scatter, whole.scatter, rtol=1e-12)
    np.testing.assert_allclose(merged.means_, whole.to_params(1e-6).means, rtol=1e-12)
    assert merged.n_samples_seen_ == len(X)


# ----------------------------------------------------------------------------- online laws
@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.parametrize("sizes", [[1] * 7 + [13, 200, 1, 2, 500], [3, 997], [250] * 4])
def test_running_average_partial_fit_equals_one_pass(ctype, sizes):
    """alpha=1, t0=0 is an exact running sum, whatever the batch sizes."""
    rng = np.random.RandomState(1)
    n = sum(sizes)
    X = rng.normal(size=(n, 3)) * [1, 2, 3] + [10, -4, 1e3]
    gm = OnlineGaussianMixture(1, covariance_type=ctype, alpha=1.0, t0=0.0, warm_up=1)
    start = 0
    for m in sizes:
        gm.partial_fit(X[start:start + m])
        start += m
    one_pass = SufficientStatistics.from_resp(X, np.ones((n, 1)), covariance_type=ctype)
    assert gm.n_samples_seen_ == n
    np.testing.assert_allclose(gm.stats_.weights, one_pass.weights, rtol=1e-12)
    np.testing.assert_allclose(gm.stats_.means, one_pass.means, rtol=1e-12)
    np.testing.assert_allclose(gm.stats_.scatter, one_pass.scatter, rtol=1e-10)
    np.testing.assert_allclose(gm.covariances_, one_pass.to_params(1e-6).covariances, rtol=1e-10)


def test_running_average_with_separated_components_matches_per_cluster_statistics():
    X, labels = blobs(7, n=3000, k=3, spread=40.0)
    gm = OnlineGaussianMixture(3, alpha=1.0, t0=0.0, warm_up=500, random_state=0)
    for part in np.array_split(np.arange(len(X)), [500, 501, 900, 2100]):
        gm.partial_fit(X[part])
    pred = gm.predict(X)
    for k in range(3):
        rows = X[pred == k]
        np.testing.assert_allclose(gm.stats_.means[k], rows.mean(0), rtol=1e-9)
        np.testing.assert_allclose(gm.stats_.weights[k], len(rows), rtol=1e-9)


def test_partial_fit_learns_a_stream_and_halflife_tracks_drift():
    rng = np.random.RandomState(0)
    a = rng.normal(0, 1, (20000, 2))
    b = rng.normal(0, 1, (20000, 2)) + [8, 8]
    stream = np.vstack([a, b])
    slow = OnlineGaussianMixture(1, warm_up=500, alpha=1.0, t0=0.0)
    fast = OnlineGaussianMixture(1, warm_up=500, halflife=2000)
    for chunk in np.array_split(stream, 80):
        slow.partial_fit(chunk)
        fast.partial_fit(chunk)
    np.testing.assert_allclose(slow.means_[0], [4, 4], atol=0.1)   # remembers everything
    np.testing.assert_allclose(fast.means_[0], [8, 8], atol=0.1)   # follows the new regime
    assert fast.stats_.total_weight < 2000 / np.log(2) * 1.01


def test_warm_up_then_not_fitted_message():
    gm = OnlineGaussianMixture(2, warm_up=100)
    gm.partial_fit(np.random.RandomState(0).normal(size=(1, 2)))
    with pytest.raises(NotFittedError, match="warming up and has seen 1 rows: a provisional model "
                                             "needs at least n_components=2"):
        gm.predict(np.zeros((1, 2)))
    gm.partial_fit(np.random.RandomState(1).normal(size=(99, 2)))
    assert gm.predict(np.zeros((3, 2))).shape == (3,)
    assert gm.n_samples_seen_ == 100


def test_fit_then_partial_fit_continues_online():
    X, _ = blobs(8, n=2000)
    gm = OnlineGaussianMixture(3, random_state=0).fit(X[:1000])
    before = gm.stats_.total_weight
    gm.partial_fit(X[1000:1500])
    assert gm.n_samples_seen_ == 1500
    assert gm.stats_.total_weight != before
    assert np.all(np.isfinite(gm.means_))


def test_collapsed_component_is_reseeded_visibly():
    rng = np.random.RandomState(0)
    X0 = np.vstack([rng.normal(0, 1, (500, 2)), rng.normal(10, 1, (500, 2))])
    gm = OnlineGaussianMixture(2, warm_up=1000, halflife=300, random_state=0, min_weight=0.05)
    gm.partial_fit(X0)
    # the stream now only visits one cluster: the other's weight decays below min_weight
    with pytest.warns(ComponentReseededWarning, match="re-seeded"):
        for _ in range(30):
            gm.partial_fit(rng.normal(0, 1, (100, 2)))
    assert len(gm.reseeds_) >= 1
    assert np.all(gm.weights_ > 0) and np.all(np.isfinite(gm.covariances_))


def test_online_state_round_trips_exactly():
    import json
    X, _ = blobs(9, n=1500)
    gm = OnlineGaussianMixture(3, warm_up=400, random_state=0)
    gm.partial_fit(X[:700])
    arrays, meta = gm._online.to_arrays()
    meta = json.loads(json.dumps(meta))
    twin = OnlineGaussianMixture(3, warm_up=400, random_state=0).partial_fit(X[:1])
    twin._online.load_arrays(arrays, meta)
    twin._publish(twin._online.params)
    gm.partial_fit(X[700:])
    twin.partial_fit(X[700:])
    np.testing.assert_array_equal(gm.stats_.scatter, twin.stats_.scatter)
    np.testing.assert_array_equal(gm.means_, twin.means_)


def test_sample_draws_from_the_mixture():
    X, _ = blobs(10, n=3000)
    for ctype in TYPES:
        gm = OnlineGaussianMixture(3, covariance_type=ctype, random_state=0).fit(X)
        S, y = gm.sample(5000)
        assert S.shape == (5000, 3) and y.shape == (5000,)
        np.testing.assert_allclose(np.bincount(y, minlength=3) / 5000, gm.weights_, atol=0.03)
    with pytest.raises(ValueError, match="n_samples"):
        gm.sample(0)


# ----------------------------------------------------------------------------- robustness
@pytest.mark.parametrize("bad, match", [
    (np.array([[1.0, np.nan]]), "NaN"),
    (np.array([[1.0, np.inf]]), "infinity"),
    (np.zeros((0, 2)), "0 sample"),
    (np.array([["a", "b"]]), "could not convert|string"),
])
def test_bad_batches_raise_value_error_and_leave_state_unchanged(bad, match):
    X, _ = blobs(11, n=800, d=2)
    gm = OnlineGaussianMixture(2, warm_up=300, random_state=0).partial_fit(X[:500])
    before = gm.stats_.copy()
    with pytest.raises(ValueError, match=match):
        gm.partial_fit(bad)
    assert gm.stats_ == before
    assert gm.n_samples_seen_ == 500


def test_wrong_number_of_features_between_calls():
    gm = OnlineGaussianMixture(2, warm_up=10).partial_fit(np.random.RandomState(0).normal(size=(20, 3)))
    with pytest.raises(ValueError, match="X has 4 features, but OnlineGaussianMixture is expecting 3"):
        gm.partial_fit(np.zeros((5, 4)))
    with pytest.raises(ValueError, match="expecting 3"):
        gm.predict(np.zeros((5, 2)))


def test_fewer_samples_than_components():
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        OnlineGaussianMixture(5).fit(np.random.RandomState(0).normal(size=(3, 2)))


def test_bad_sample_weight_and_parameters():
    X = np.random.RandomState(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(20,\)"):
        OnlineGaussianMixture(2).fit(X, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="sample_weight must be >= 0"):
        OnlineGaussianMixture(2).fit(X, sample_weight=-np.ones(20))
    with pytest.raises(ValueError, match="NaN"):
        OnlineGaussianMixture(2).fit(X, sample_weight=np.full(20, np.nan))
    with pytest.raises(ValueError, match="covariance_type"):
        OnlineGaussianMixture(2, covariance_type="round").fit(X)
    with pytest.raises(ValueError, match="alpha"):
        OnlineGaussianMixture(2, alpha=0.2).fit(X)
    with pytest.raises(ValueError, match="means_init must have shape"):
        OnlineGaussianMixture(2, means_init=np.zeros((3, 2))).fit(X)
    with pytest.raises(ValueError, match="weights_init must sum to 1"):
        OnlineGaussianMixture(2, weights_init=[0.2, 0.2]).fit(X)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.parametrize("case", ["duplicates", "constant_feature", "offset", "tiny_scale", "d_gt_n"])
def test_degenerate_data_gives_finite_parameters(ctype, case):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 4))
    if case == "duplicates":
        X = np.repeat(X[:5], 40, axis=0)
    elif case == "constant_feature":
        X[:, 2] = 3.0
    elif case == "offset":
        X = X + 1e8
    elif case == "tiny_scale":
        X = X * 1e-8
    elif case == "d_gt_n":
        X = rng.normal(size=(12, 30))
    gm = OnlineGaussianMixture(3, covariance_type=ctype, random_state=0).fit(X)
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert np.all(np.isfinite(getattr(gm, attr))), attr
    assert np.all(np.isfinite(gm.score_samples(X)))
    online = OnlineGaussianMixture(3, covariance_type=ctype, warm_up=len(X) // 2, random_state=0)
    for part in np.array_split(X, 4):
        online.partial_fit(part)
    assert np.all(np.isfinite(online.means_)) and np.all(np.isfinite(online.covariances_))
    if case == "offset":
        # the offset must not wash out the structure: same fit as on centred data
        ref = OnlineGaussianMixture(3, covariance_type=ctype, random_state=0).fit(X - 1e8)
        np.testing.assert_allclose(np.sort(gm.score_samples(X)), np.sort(ref.score_samples(X - 1e8)),
                                   rtol=1e-3, atol=1e-3)


def test_pickle_after_scoring_round_trips():
    """A cached scorer (kernel functions, buffers) must not make a used model unpicklable."""
    import pickle
    X, _ = blobs(12)
    gm = OnlineGaussianMixture(3, random_state=0).fit(X)
    expected = gm.predict_proba(X)
    clone = pickle.loads(pickle.dumps(gm))
    np.testing.assert_array_equal(clone.predict_proba(X), expected)
    clone.partial_fit(X[:50])
    assert clone.n_samples_seen_ == len(X) + 50


@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_warm_up_short_runs_continue_the_best_start(ctype):
    """fit_em(short_iter=m): every start runs m iterations, the best by lower bound continues; the
    result equals that start run uninterrupted, and its iterations and bounds add up."""
    from online_gmm._batch import fit_em
    from online_gmm._em import run_em
    from online_gmm._init import initial_params

    rng = np.random.RandomState(3)
    X = np.vstack([rng.normal(c, 1.0, size=(300, 3)) for c in (0.0, 4.0, 9.0)])
    common = dict(n_components=3, covariance_type=ctype, reg_covar=1e-6)
    res = fit_em(X, init_params="random", n_init=4, rng=np.random.RandomState(0), tol=1e-6,
                 max_iter=200, short_iter=2, **common)
    # by hand: the same four starts (same random stream), two iterations each
    draw = np.random.RandomState(0)
    starts = [initial_params(X, method="random", rng=draw, **common) for _ in range(4)]
    short = [run_em(X, p, reg_covar=1e-6, tol=1e-6, max_iter=2) for p in starts]
    best = int(np.argmax([r.lower_bound for r in short]))
    whole = run_em(X, starts[best], reg_covar=1e-6, tol=1e-6, max_iter=200)
    assert whole.n_iter > 2                       # the continuation really happened
    assert res.n_iter == whole.n_iter and res.converged == whole.converged
    np.testing.assert_allclose(res.lower_bounds, whole.lower_bounds, rtol=1e-12)
    np.testing.assert_allclose(res.params.means, whole.params.means, rtol=1e-10)
    np.testing.assert_allclose(res.params.precisions_cholesky, whole.params.precisions_cholesky,
                               rtol=1e-10)


def test_online_step_counts_extra_records_in_the_batch():
    """OnlineEM.step(X_a, batch=stats(X_a + X_b), extra=(n_b, n_b)) is the same update as a step on
    all rows: the records known only through their statistics count in the schedule's clock."""
    rng = np.random.RandomState(5)
    X = np.vstack([rng.normal(c, 1.0, size=(400, 3)) for c in (0.0, 5.0)])
    model = OnlineGaussianMixture(2, warm_up=300, random_state=0).partial_fit(X[:300])
    a, b = X[300:500], X[500:620]
    whole, split = copy.deepcopy(model._online), copy.deepcopy(model._online)
    whole.step(np.vstack([a, b]))
    stats_a, ll_a = split.scorer().expected_statistics(a)
    stats_b, ll_b = split.scorer().expected_statistics(b)
    split.step(a, batch=(stats_a + stats_b, ll_a + ll_b), extra=(len(b), float(len(b))))
    assert split.t == whole.t and split.n_seen == whole.n_seen
    np.testing.assert_allclose(split.stats.weights, whole.stats.weights, rtol=1e-12)
    np.testing.assert_allclose(split.stats.means, whole.stats.means, rtol=1e-12)
    np.testing.assert_allclose(split.stats.scatter, whole.stats.scatter, rtol=1e-10)
    # only statistics, no complete rows: still an update (nothing to re-seed from)
    only = copy.deepcopy(model._online)
    only.step(np.empty((0, 3)), batch=(stats_b, ll_b), extra=(len(b), float(len(b))))
    assert only.t == model._online.t + len(b) and only.n_seen == model._online.n_seen + len(b)
    with pytest.raises(ValueError, match="extra"):
        copy.deepcopy(model._online).step(a, extra=(1, 1.0))
