"""The pipeline's one-pass step (``OnlineEM.score_learn``, ``Scorer.score_statistics``) against the
two-pass ``score_then_learn`` it replaces on the hot path: the same scores, the same records learned,
the same model."""

import copy
import warnings

import numpy as np
import pytest
from sklearn.utils import check_random_state

from online_gmm._gaussian import KERNELS
from online_gmm._suffstats import SufficientStatistics
from online_gmm.estimator import OnlineGaussianMixture

TYPES = sorted(KERNELS)


def _warm(ctype, d=4, seed=0):
    """An initialised OnlineEM and a stream of 4-component data with a few far outliers."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, size=(4, d))
    X = centres[rng.integers(0, 4, 9000)] + rng.normal(size=(9000, d))
    X[rng.choice(9000, 40, replace=False)] += rng.choice([-1, 1], size=(40, d)) * 40.0
    X[7777] = 1e120            # log p = -inf: a score of +inf, always kept out by the rule
    online = OnlineGaussianMixture(n_components=4, covariance_type=ctype, random_state=0)._new_online(
        d, check_random_state(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        online.score_then_learn(X[:3000])
    assert online.initialised
    return online, X[3000:]


def _rule(skip_above):
    def learn(log_p):
        if skip_above is None:
            return np.ones(log_p.shape[0], dtype=bool)
        return ~((-log_p > skip_above) | (-log_p == np.inf))
    return learn


@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.parametrize("skip_above", [None, 12.0, np.inf])
def test_one_pass_scores_and_learns_as_the_two_pass_step(ctype, skip_above):
    one, X = _warm(ctype)
    two = copy.deepcopy(one)
    learned_rows, n_refused = 0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for a in range(0, X.shape[0], 1000):
            ids = np.arange(a, a + 1000)
            (resp, log_p), refused = one.score_learn(X[a: a + 1000], skip_above=skip_above, ids=ids)
            (log_resp, log_p2), refused2 = two.score_then_learn(X[a: a + 1000], _rule(skip_above), ids=ids)
            learned_rows += int(_rule(skip_above)(log_p2).sum())
            n_refused += len(refused)
            np.testing.assert_allclose(log_p, log_p2, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(resp, np.exp(log_resp), rtol=1e-9, atol=1e-12)
            assert [i for i, _ in refused] == [i for i, _ in refused2]
            assert np.isfinite(resp).all() and not np.isnan(log_p).any()
    assert one.n_seen == two.n_seen
    assert one.n_seen == 3000 + learned_rows - n_refused
    if skip_above is not None and np.isfinite(skip_above):
        assert learned_rows < X.shape[0]
    assert one.params.is_finite() and one.stats.is_finite()
    np.testing.assert_allclose(one.params.means, two.params.means, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(one.params.covariances, two.params.covariances, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(one.params.weights, two.params.weights, rtol=1e-8)


@pytest.mark.parametrize("ctype", TYPES)
def test_score_statistics_are_the_statistics_of_the_learned_rows(ctype):
    online, X = _warm(ctype)
    sc = online.scorer()
    Xb = X[:2500]
    resp, log_p, learned, stats, ll = sc.score_statistics(Xb, skip_above=10.0)
    assert learned is not None and 0 < (~learned).sum() < 2500
    np.testing.assert_array_equal(learned, -log_p <= 10.0)
    want = SufficientStatistics.from_resp(Xb[learned], resp[learned], covariance_type=ctype)
    np.testing.assert_allclose(stats.weights, want.weights, rtol=1e-10)
    np.testing.assert_allclose(stats.means, want.means, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats.scatter, want.scatter, rtol=1e-8, atol=1e-8)
    assert ll == pytest.approx(log_p[learned].sum(), rel=1e-12)
    # no rule: every row learned, and the statistics of expected_statistics
    resp_all, log_p_all, none, stats_all, ll_all = sc.score_statistics(Xb)
    ref, ref_ll = sc.expected_statistics(Xb)
    assert none is None
    np.testing.assert_allclose(stats_all.scatter, ref.scatter, rtol=1e-12, atol=1e-12)
    assert ll_all == pytest.approx(ref_ll, rel=1e-12)
    np.testing.assert_array_equal(log_p_all, log_p)


@pytest.mark.parametrize("ctype", TYPES)
def test_a_far_row_is_scored_not_learned_and_no_nan_reaches_the_model(ctype):
    online, X = _warm(ctype)
    Xb = X[4000:5000].copy()               # holds row 7777 - 3000 = 4777 of the stream: 1e120
    before = online.n_seen
    (resp, log_p), refused = online.score_learn(Xb, skip_above=50.0, ids=np.arange(1000))
    far = np.flatnonzero(-log_p > 50.0)
    assert 777 in far.tolist() and refused == []
    assert online.n_seen == before + 1000 - far.size
    assert np.isfinite(resp).all() and np.allclose(resp.sum(axis=1), 1.0)
    assert online.params.is_finite() and online.stats.is_finite()


@pytest.mark.parametrize("ctype", TYPES)
def test_a_zero_density_row_is_never_learned_even_below_an_infinite_threshold(ctype):
    """A score of +inf is flagged whatever the threshold (the anomaly rule), so ``skip_above=inf``
    still keeps it out: its density is zero under every component (tiny variances, a value at
    MAX_ABS), and learning it would put an infinite log-likelihood into the update."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 4)) * 1e-5 + rng.integers(0, 3, 3000)[:, None]
    online = OnlineGaussianMixture(n_components=3, covariance_type=ctype, random_state=0,
                                   reg_covar=1e-12)._new_online(4, check_random_state(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        online.score_then_learn(X[:2000])
    Xb = X[2000:].copy()
    Xb[5] = 1e150
    resp, log_p, learned, stats, ll = online.scorer().score_statistics(Xb, skip_above=np.inf)
    assert log_p[5] == -np.inf and np.isfinite(np.delete(log_p, 5)).all()
    assert learned is not None and np.flatnonzero(~learned).tolist() == [5]
    assert np.isfinite(ll) and stats.is_finite() and np.isclose(resp[5].sum(), 1.0)
    before = online.n_seen
    (_, log_p2), refused = online.score_learn(Xb, skip_above=np.inf)
    assert refused == [] and online.n_seen == before + 999
    assert online.params.is_finite()


def test_a_value_beyond_max_abs_takes_the_guarded_path_with_its_reason():
    online, X = _warm("full")
    Xb = X[:1000].copy()
    Xb[10, 2] = 1e200
    before = online.n_seen
    (resp, log_p), refused = online.score_learn(Xb, skip_above=None, ids=np.arange(500, 1500))
    assert [i for i, _ in refused] == [510]
    assert "too large for the model's arithmetic" in refused[0][1]
    assert online.n_seen == before + 999
    assert resp.shape == (1000, 4) and np.isfinite(resp).all()
