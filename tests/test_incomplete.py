"""Learning from incomplete records: the exact E-step of online_gmm._marginal.incomplete_statistics
(conditional expectations, Ghahramani & Jordan 1994) and its use by the River learners."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pandas as pd
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from _params import dense_cov as _dense_cov
from _params import random_params
import online_gmm._marginal as marginal_mod
from online_gmm._em import Scorer, run_em
from online_gmm._init import initial_params
from online_gmm._marginal import MarginalCache, incomplete_statistics
from online_gmm.river import GMMAnomalyDetector, OnlineGMM

CTYPES = ["full", "tied", "diag", "spherical"]


def _random_params(ctype, k=3, d=4, seed=0):
    return random_params(ctype, k, d, seed, mean_scale=2.0, weight_alpha=3.0)


def _conditional(mu, S, x):
    """Independent reference: mean and covariance of x_m | x_o for N(mu, S), by linear solves."""
    o, m = ~np.isnan(x), np.isnan(x)
    s_oo, s_mo = S[np.ix_(o, o)], S[np.ix_(m, o)]
    filled = x.copy()
    filled[m] = mu[m] + s_mo @ np.linalg.solve(s_oo, x[o] - mu[o])
    C = np.zeros_like(S)
    C[np.ix_(m, m)] = S[np.ix_(m, m)] - s_mo @ np.linalg.solve(s_oo, s_mo.T)
    return filled, C


def _observed_loglik(params, X):
    """sum_i log p(x_o,i) by scipy on each row's observed sub-vector (rows grouped by pattern)."""
    total = 0.0
    obs = ~np.isnan(X)
    for pat in np.unique(obs, axis=0):
        if not pat.any():
            continue
        rows = X[(obs == pat).all(axis=1)][:, pat]
        terms = [np.log(w) + multivariate_normal(params.means[k, pat],
                                                 _dense_cov(params, k)[np.ix_(pat, pat)]).logpdf(rows)
                 for k, w in enumerate(params.weights)]
        total += float(logsumexp(np.reshape(terms, (len(terms), -1)), axis=0).sum())
    return total


def _blobs(n=600, d=4, k=3, seed=0, missing=0.2):
    rng = np.random.RandomState(seed)
    centres = rng.normal(0, 4, (k, d))
    mix = rng.normal(size=(d, d)) * 0.6 + np.eye(d)
    X = centres[rng.randint(k, size=n)] + rng.normal(size=(n, d)) @ mix
    Xm = X.copy()
    Xm[rng.rand(n, d) < missing] = np.nan
    return X, Xm


# ----------------------------------------------------------------------------- the E-step
@pytest.mark.parametrize("ctype", CTYPES)
def test_rows_without_nan_equal_the_core_e_step(ctype):
    params = _random_params(ctype, k=3, d=4, seed=1)
    rng = np.random.RandomState(2)
    X = params.means[rng.randint(3, size=300)] + rng.normal(0, 1.5, (300, 4)) + 100.0
    params.means += 100.0                    # offset data and means: the digits must be kept
    params._prepared = None
    w = np.random.RandomState(3).uniform(0.2, 2.0, 300)
    for sw in (None, w):
        ref, ref_ll = Scorer(params).expected_statistics(X, sw)
        got, ll = incomplete_statistics(X, params, sw)
        assert ll == pytest.approx(ref_ll, rel=1e-12)
        for name in ("weights", "means", "scatter"):
            np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=1e-12)
        # the conditional path itself, run on complete rows (an empty missing block, the marginal
        # over every feature), reduces to the same statistics
        direct, direct_ll = marginal_mod._conditional_statistics(
            X, np.arange(len(X)), np.zeros(X.shape, dtype=bool), params, sw, None)
        assert direct_ll == pytest.approx(ref_ll, rel=1e-10)
        for name in ("weights", "means", "scatter"):
            np.testing.assert_allclose(getattr(direct, name), getattr(ref, name), rtol=1e-9,
                                       atol=1e-9)


def test_one_gaussian_matches_the_conditional_gaussian():
    """K=1, full: the statistics are those of the rows completed by their conditional means, plus
    the conditional covariances, computed here independently with linear solves."""
    params = _random_params("full", k=1, d=5, seed=3)
    mu, S = params.means[0], params.covariances[0]
    rng = np.random.RandomState(4)
    X = rng.multivariate_normal(mu, S, size=12)
    patterns = [[1], [0, 4], [2, 3, 1], [4], [0, 1, 2, 3]]
    for i, miss in enumerate(patterns * 2):
        X[i, miss] = np.nan
    w = rng.uniform(0.5, 2.0, len(X))
    filled, covs = zip(*[_conditional(mu, S, x) for x in X])
    filled = np.array(filled)
    mean = w @ filled / w.sum()
    dev = filled - mean
    scatter = (w[:, None] * dev).T @ dev + np.einsum("i,ijk->jk", w, np.array(covs))
    ll = sum(wi * multivariate_normal(mu[~np.isnan(x)], S[np.ix_(~np.isnan(x), ~np.isnan(x))])
             .logpdf(x[~np.isnan(x)]) for wi, x in zip(w, X))
    stats, got_ll = incomplete_statistics(X, params, w)
    assert stats.weights[0] == pytest.approx(w.sum(), rel=1e-12)
    np.testing.assert_allclose(stats.means[0], mean, rtol=1e-10)
    np.testing.assert_allclose(stats.scatter[0], scatter, rtol=1e-9, atol=1e-10)
    assert got_ll == pytest.approx(ll, rel=1e-10)
    # one row alone: its completed value is the conditional mean, the scatter its covariance
    one, _ = incomplete_statistics(X[2:3], params)
    np.testing.assert_allclose(one.means[0], filled[2], rtol=1e-10)
    np.testing.assert_allclose(one.scatter[0], covs[2], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("ctype", CTYPES)
def test_one_row_responsibilities_conditional_means_and_covariances(ctype):
    """K=3: for one incomplete row, the component weights are the responsibilities of the marginal
    (scipy on the observed sub-vector), each component's mean the conditional mean under it and the
    scatter the responsibility-weighted conditional covariance, in the layout of the type."""
    params = _random_params(ctype, k=3, d=5, seed=5)
    x = np.random.RandomState(6).normal(0, 2, 5)
    x[[1, 3]] = np.nan
    o = ~np.isnan(x)
    wlp = np.array([np.log(w) + multivariate_normal(params.means[k, o],
                                                    _dense_cov(params, k)[np.ix_(o, o)]).logpdf(x[o])
                    for k, w in enumerate(params.weights)])
    resp = np.exp(wlp - logsumexp(wlp))
    stats, ll = incomplete_statistics(x[None], params)
    assert ll == pytest.approx(logsumexp(wlp), rel=1e-10)
    np.testing.assert_allclose(stats.weights, resp, rtol=1e-9, atol=1e-15)
    conds = [_conditional(params.means[k], _dense_cov(params, k), x) for k in range(3)]
    for k, (filled, _) in enumerate(conds):
        np.testing.assert_allclose(stats.means[k], filled, rtol=1e-9)
    covs = np.array([c for _, c in conds])
    want = {"full": lambda: resp[:, None, None] * covs,
            "tied": lambda: np.einsum("k,kij->ij", resp, covs),
            "diag": lambda: resp[:, None] * np.einsum("kii->ki", covs),
            "spherical": lambda: resp * np.einsum("kii->k", covs)}[ctype]()
    np.testing.assert_allclose(stats.scatter, want, rtol=1e-9, atol=1e-12)


def test_rows_with_nothing_observed_contribute_nothing_and_the_cache_gives_the_same():
    params = _random_params("full", k=3, d=4, seed=7)
    _, Xm = _blobs(n=80, seed=7, missing=0.3)
    ref, ref_ll = incomplete_statistics(Xm, params)
    padded = np.vstack([Xm[:40], np.full((3, 4), np.nan), Xm[40:]])
    got, ll = incomplete_statistics(padded, params, marginals=MarginalCache(params))
    assert ll == pytest.approx(ref_ll, rel=1e-12)
    for name in ("weights", "means", "scatter"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=1e-10, atol=1e-12)
    empty, zero = incomplete_statistics(np.full((2, 4), np.nan), params)
    assert zero == 0.0 and empty.total_weight == 0.0
    with pytest.raises(ValueError, match=r"X must have shape \(n_samples, 4\), got \(3, 5\)"):
        incomplete_statistics(np.zeros((3, 5)), params)


def test_chunks_are_merged_exactly(monkeypatch):
    """Many rows and patterns: the stacked reduction in small chunks gives the same statistics."""
    params = _random_params("full", k=3, d=4, seed=8)
    _, Xm = _blobs(n=500, seed=8, missing=0.4)
    ref, ref_ll = incomplete_statistics(Xm, params)
    monkeypatch.setattr(marginal_mod, "_STACK_FLOATS", 3 * 4 * 7)      # 7 rows per chunk
    got, ll = incomplete_statistics(Xm, params)
    assert ll == pytest.approx(ref_ll, rel=1e-12)
    for name in ("weights", "means", "scatter"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=1e-9, atol=1e-10)


# ----------------------------------------------------------------------------- EM laws
def _em_incomplete(Xm, params, max_iter=40):
    return run_em(Xm, params, reg_covar=0.0, tol=0.0, max_iter=max_iter,
                  e_step=lambda p: incomplete_statistics(Xm, p))


@pytest.mark.parametrize("ctype", CTYPES)
def test_em_never_decreases_the_observed_data_likelihood(ctype, monkeypatch):
    _, Xm = _blobs(n=600, seed=0)
    complete_rows = Xm[~np.isnan(Xm).any(axis=1)]
    start = initial_params(complete_rows, n_components=3, covariance_type=ctype, method="kmeans",
                           reg_covar=1e-6, rng=np.random.RandomState(1))
    result = _em_incomplete(Xm, start)
    lb = np.array(result.lower_bounds)
    # the lower bound is the observed-data log-likelihood per record (checked against scipy)
    assert lb[0] * len(Xm) == pytest.approx(_observed_loglik(start, Xm), rel=1e-10)
    # 1e-9 nats per record: the rounding of the evaluation near convergence (seen up to 2e-10 for
    # 'tied' with reg_covar=0, where scipy's values of the same iterates still increase)
    assert np.diff(lb).min() >= -1e-9
    assert lb[-1] > lb[0] + 0.005
    # not vacuous: without the conditional covariances (plain conditional-mean imputation) the
    # same law fails on these data, by more than 100 times the tolerance
    monkeypatch.setattr(marginal_mod, "_WEIGHTED_TERM",
                        {k: (lambda nk, c: 0.0 * c) for k in CTYPES})
    assert np.diff(_em_incomplete(Xm, start).lower_bounds).min() < -1e-7


def test_one_gaussian_mcar_converges_to_the_complete_data_fit(monkeypatch):
    """K=1, 20% of the entries missing completely at random: the EM fixed point estimates the same
    mean and covariance as the complete-data fit, within sampling error.

    Both are consistent estimators of the same parameters; their difference has a standard error
    below that of the incomplete-data estimator, about sigma_j / sqrt(0.8 n) for a mean and
    sqrt((S_ii S_jj + S_ij^2) / (0.8 n)) for a covariance entry. The tolerance is 4 such standard
    errors. Conditional-mean imputation without the conditional covariance misses every variance by
    more than that (checked, so the test can fail)."""
    rng = np.random.RandomState(11)
    n, d = 40000, 3
    S = np.array([[2.0, 1.2, -0.6], [1.2, 1.5, 0.4], [-0.6, 0.4, 1.0]])
    X = rng.multivariate_normal([1.0, -2.0, 5.0], S, size=n)
    Xm = X.copy()
    Xm[rng.rand(n, d) < 0.2] = np.nan
    Xm[np.isnan(Xm).all(axis=1), 0] = X[np.isnan(Xm).all(axis=1), 0]
    mean, cov = X.mean(axis=0), np.cov(X.T, bias=True)
    start = initial_params(np.nan_to_num(Xm), n_components=1, covariance_type="full",
                           method="kmeans", reg_covar=0.0, rng=np.random.RandomState(0))
    fit = run_em(Xm, start, reg_covar=0.0, tol=1e-10, max_iter=500,
                 e_step=lambda p: incomplete_statistics(Xm, p)).params
    se_mean = np.sqrt(np.diag(cov) / (0.8 * n))
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov ** 2) / (0.8 * n))
    assert np.all(np.abs(fit.means[0] - mean) < 4 * se_mean)
    assert np.all(np.abs(fit.covariances[0] - cov) < 4 * se_cov)
    monkeypatch.setattr(marginal_mod, "_WEIGHTED_TERM",
                        {k: (lambda nk, c: 0.0 * c) for k in CTYPES})
    naive = run_em(Xm, start, reg_covar=0.0, tol=1e-10, max_iter=500,
                   e_step=lambda p: incomplete_statistics(Xm, p)).params
    assert np.all(np.diag(cov) - np.diag(naive.covariances[0]) > 4 * np.diag(se_cov))


# ----------------------------------------------------------------------------- River learners
def _rows(n, seed=0, d=4):
    rng = np.random.RandomState(seed)
    centres = np.array([[-4.0] * d, [4.0] * d])
    return centres[rng.randint(2, size=n)] + rng.normal(size=(n, d))


def _dict_rows(X):
    return [{f"f{j}": float(v) for j, v in enumerate(row) if not np.isnan(v)} for row in X]


@pytest.mark.parametrize("cls", [OnlineGMM, GMMAnomalyDetector])
def test_incomplete_stream_is_learned_only_with_learn_incomplete(cls):
    X = _rows(300)
    Y = _rows(64, seed=1)
    Y[np.arange(64), np.arange(64) % 4] = np.nan               # every record misses one feature
    models = {}
    for flag in (True, False):
        model = cls(n_components=2, warm_up=100, update_every=16, seed=0, learn_incomplete=flag)
        for x in _dict_rows(X[:112]):                          # warm-up fit at 112 records
            model.learn_one(x)
        before = (model.params_.means.copy(), model.online_.n_updates, model.online_.t)
        for x in _dict_rows(Y):
            model.learn_one(x)
        models[flag] = (model, before)
    on, before = models[True]
    assert on.n_incomplete_ == on.n_incomplete_learned_ == 64 and on.n_incomplete_skipped_ == 0
    assert on.n_learned_ == 112 + 64 and on.online_.n_updates == before[1] + 4
    assert on.online_.t == before[2] + 64
    assert not np.allclose(on.params_.means, before[0])
    off, before = models[False]
    assert off.n_incomplete_ == off.n_incomplete_skipped_ == 64 and off.n_incomplete_learned_ == 0
    assert off.n_learned_ == 112 and off.online_.n_updates == before[1]
    np.testing.assert_array_equal(off.params_.means, before[0])


@pytest.mark.parametrize("ctype", CTYPES)
@pytest.mark.parametrize("standardize", [False, True])
def test_the_update_is_one_core_step_with_both_statistics(ctype, standardize):
    """A buffer with complete and incomplete rows: the learner's update equals OnlineEM.step with
    the complete rows' core E-step plus incomplete_statistics of the (standardised) incomplete
    rows, counted in the clock through ``extra``."""
    X = _rows(200, seed=2) * [1.0, 10.0, 0.1, 1.0] + [0.0, 50.0, -3.0, 0.0]
    model = OnlineGMM(n_components=2, covariance_type=ctype, warm_up=96, update_every=16,
                      standardize=standardize, seed=0)
    for x in _dict_rows(X[:96]):
        model.learn_one(x)
    B = X[96:112].copy()
    B[[1, 5, 6, 11], [0, 2, 3, 1]] = np.nan
    B[9, [0, 1]] = np.nan
    online = copy.deepcopy(model.online_)
    Z = B if not standardize else (B - model.shift_) / model.scale_
    inc = np.isnan(Z).any(axis=1)
    stats, ll = Scorer(online.params).expected_statistics(Z[~inc])
    extra, extra_ll = incomplete_statistics(Z[inc], online.params)
    online.step(Z[~inc], batch=(stats + extra, ll + extra_ll), extra=(5, 5.0))
    for x in _dict_rows(B):
        model.learn_one(x)
    assert model.n_pending_ == 0 and model.n_incomplete_learned_ == 5
    assert model.online_.t == online.t and model.online_.n_seen == online.n_seen
    for name in ("weights", "means", "scatter"):
        np.testing.assert_allclose(getattr(model.online_.stats, name), getattr(online.stats, name),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_learn_many_equals_learn_one_with_many_incomplete_rows(ctype):
    X = _rows(500, seed=3)
    rng = np.random.RandomState(3)
    X[rng.rand(*X.shape) < 0.25] = np.nan
    X[3] = [1.0, 2.0, 3.0, 4.0]                                # the schema: a complete first record
    stream = _dict_rows(X[3:])
    one = GMMAnomalyDetector(n_components=2, covariance_type=ctype, warm_up=64, update_every=8,
                             seed=0)
    many = one.clone()
    for x in stream:
        one.learn_one(x)
    frame = pd.DataFrame(stream, columns=[f"f{j}" for j in range(4)])
    for a, b in [(0, 50), (50, 51), (51, 300), (300, len(stream))]:
        many.learn_many(frame.iloc[a:b])
    for name in ("n_learned_", "n_incomplete_", "n_incomplete_learned_", "n_incomplete_skipped_",
                 "n_pending_"):
        assert getattr(one, name) == getattr(many, name), name
    assert one.n_incomplete_learned_ > 150 and one.n_incomplete_skipped_ > 10
    assert one.n_incomplete_ == one.n_incomplete_learned_ + one.n_incomplete_skipped_
    np.testing.assert_allclose(one.online_.stats.scatter, many.online_.stats.scatter, rtol=1e-10)
    np.testing.assert_allclose(one.params_.means, many.params_.means, rtol=1e-10, atol=1e-12)
    loaded = pickle.loads(pickle.dumps(one))
    assert loaded.score_one(stream[0]) == one.score_one(stream[0])


def test_missing_at_random_is_learned_without_the_complete_case_bias():
    """b is missing whenever a > 0.5 (missing at random: it depends on the observed a). Skipping
    incomplete records learns the complete cases, whose mean of a is E[a | a <= 0.5] = -0.51;
    learning them through conditional expectations recovers the mean (0, 0)."""
    rng = np.random.RandomState(5)
    a = rng.normal(size=20000)
    b = a + 0.5 * rng.normal(size=a.size)
    stream = [{"a": float(u)} if u > 0.5 and i >= 400 else {"a": float(u), "b": float(v)}
              for i, (u, v) in enumerate(zip(a, b))]
    means = {}
    for flag in (True, False):
        model = OnlineGMM(n_components=1, warm_up=400, update_every=32, seed=0,
                          learn_incomplete=flag)
        for x in stream:
            model.learn_one(x)
        means[flag] = model.params_.means[0]
    assert np.all(np.abs(means[True]) < 0.05), means[True]
    assert np.all(means[False] < -0.4), means[False]


def test_old_pickles_keep_skipping_incomplete_records():
    model = OnlineGMM(n_components=2, warm_up=40, update_every=8, seed=0)
    for x in _dict_rows(_rows(60)):
        model.learn_one(x)
    model.learn_one({"f0": 1.0})
    state = model.__getstate__()
    for key in ("learn_incomplete", "n_incomplete_learned_", "n_incomplete_skipped_",
                "_n_buf_incomplete"):
        state.pop(key)
    old = OnlineGMM.__new__(OnlineGMM)
    old.__setstate__(state)
    assert old.learn_incomplete is False and old.n_incomplete_skipped_ == old.n_incomplete_ == 1
    n = old.n_learned_
    old.learn_one({"f1": 2.0})
    assert old.n_learned_ == n and old.n_incomplete_skipped_ == 2


def test_learn_incomplete_is_validated():
    with pytest.raises(ValueError, match=r"learn_incomplete must be True or False, got 1"):
        OnlineGMM(learn_incomplete=1)
