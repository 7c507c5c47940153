"""Tests for online_gmm.refit: reservoir, refits over K, component matching, history, plots."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from scipy import integrate, stats as sps

from online_gmm import OnlineGaussianMixture
from online_gmm._em import GaussianParams
from online_gmm._suffstats import SufficientStatistics
from online_gmm.refit import (BICHistory, Reservoir, bhattacharyya_distances, information_criteria,
                              match_components, neighbour_start, permute_params, permute_statistics,
                              plot_components, plot_history, refit)

CTYPES = ["full", "tied", "diag", "spherical"]


def blobs(k: int, n_per: int = 150, seed: int = 0, d: int = 2, sep: float = 12.0):
    """Well-separated clusters on a circle of radius ``sep``; returns (X, true means)."""
    rng = np.random.default_rng(seed)
    angles = 2 * np.pi * np.arange(k) / k
    centres = np.zeros((k, d))
    centres[:, 0] = sep * np.cos(angles)
    centres[:, 1] = sep * np.sin(angles)
    X = np.vstack([c + rng.normal(size=(n_per, d)) for c in centres])
    return X, centres


def stats_from_labels(X, labels, k, ctype="full"):
    resp = np.zeros((len(X), k))
    resp[np.arange(len(X)), labels] = 1.0
    return SufficientStatistics.from_resp(X, resp, covariance_type=ctype)


def nearest(means, centres):
    """Index of the nearest true centre for each fitted mean."""
    return np.argmin(((means[:, None] - centres[None]) ** 2).sum(-1), axis=1)


# ================================================================== reservoir
def stream(seed: int, n_batches: int = 60, d: int = 3):
    rng = np.random.default_rng(seed)
    for _ in range(n_batches):
        yield rng.normal(size=(int(rng.integers(0, 400)), d))


@pytest.mark.parametrize("mode", ["reservoir", "window"])
def test_reservoir_exact_resume(mode):
    batches = list(stream(1))
    a = Reservoir(200, mode=mode, seed=42)
    for X in batches[:25]:
        a.add(X)
    arrays, meta = a.to_arrays()
    meta = json.loads(json.dumps(meta))                 # through JSON, as in a checkpoint
    arrays = {k: v.copy() for k, v in arrays.items()}
    b = Reservoir.from_arrays(arrays, meta)
    assert b.n_seen == a.n_seen
    assert b.rng.bit_generator.state == a.rng.bit_generator.state
    for X in batches[25:]:
        a.add(X)
        b.add(X)
        assert np.array_equal(a.data(), b.data())
    assert a.to_arrays()[1] == b.to_arrays()[1]


def test_reservoir_generator_state_round_trips_through_json():
    rng = np.random.default_rng(123)
    rng.random(17)
    state = rng.bit_generator.state
    assert json.loads(json.dumps(state)) == state


def test_reservoir_empty_state_round_trip():
    a = Reservoir(5, seed=1)
    b = Reservoir.from_arrays(*a.to_arrays())
    assert b.data().shape == (0, 0) and b.n_features is None
    X = np.arange(20.0).reshape(10, 2)
    a.add(X)
    b.add(X)
    assert np.array_equal(a.data(), b.data())


def test_reservoir_memory_is_bounded():
    size, d = 500, 4
    res = Reservoir(size, seed=0)
    rng = np.random.default_rng(0)
    res.add(rng.normal(size=(10, d)))
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for _ in range(200):
        res.add(rng.normal(size=(1000, d)))
    retained = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert res.n_seen == 200_010
    assert res._buf.shape == (size, d)
    assert res.data().shape == (size, d)
    assert retained < 64 * 1024, retained        # nothing grows with the stream
    assert res.to_arrays()[0]["data"].nbytes == size * d * 8


def test_window_keeps_last_rows():
    batches = [np.arange(s, s + n, dtype=float)[:, None] for s, n in
               [(0, 3), (3, 0), (3, 9), (12, 1), (13, 25), (38, 4), (42, 10), (52, 7)]]
    win = Reservoir(10, mode="window")
    seen = []
    for X in batches:
        win.add(X)
        seen.append(X)
        allX = np.concatenate(seen)
        assert np.array_equal(win.data(), allX[-10:])
    assert win.n_seen == 59


def test_reservoir_fill_phase_keeps_everything():
    res = Reservoir(50, seed=0)
    X = np.arange(40.0)[:, None]
    res.add(X[:15])
    res.add(X[15:])
    assert np.array_equal(res.data(), X)


def test_reservoir_sampling_is_uniform():
    """Every row of the stream is kept with probability size / n_seen, whatever the batching."""
    n_total, size, runs = 1000, 50, 600
    counts = np.zeros(n_total)
    batch_rng = np.random.default_rng(7)
    for run in range(runs):
        res = Reservoir(size, seed=run)
        cuts = np.sort(batch_rng.integers(0, n_total, size=12))
        for part in np.split(np.arange(n_total, dtype=float)[:, None], cuts):
            res.add(part)
        kept = res.data()[:, 0].astype(int)
        assert np.unique(kept).size == size          # a sample without replacement
        counts[kept] += 1
    # 20 bins of 50 consecutive stream positions: equal expected counts if uniform
    binned = counts.reshape(20, -1).sum(axis=1)
    expected = runs * size / 20
    _, p = sps.chisquare(binned, np.full(20, expected))
    assert p > 1e-3, (p, binned)
    # early and late halves of the stream are kept equally often (a "keep the last" or "keep the
    # first" bug gives a ratio far from 1)
    ratio = counts[:500].sum() / counts[500:].sum()
    assert 0.93 < ratio < 1.07, ratio


def test_reservoir_does_not_depend_on_batching():
    """The accepted rows are drawn in blocks from the generator alone: any cut of the same stream
    (one row at a time included) gives the same sample, bit for bit."""
    X = np.random.default_rng(3).normal(size=(20_000, 2))
    ref = Reservoir(300, seed=11)
    ref.add(X)
    for cuts in ([1, 2, 299, 300, 301, 5000], list(range(0, 20_000, 997)), [19_999]):
        res = Reservoir(300, seed=11)
        for part in np.split(X, cuts):
            res.add(part)
        assert np.array_equal(res.data(), ref.data())
    ones = Reservoir(300, seed=11)
    for row in X[:2000]:
        ones.add(row[None, :])
    part = Reservoir(300, seed=11)
    part.add(X[:2000])
    assert np.array_equal(ones.data(), part.data())


def test_reservoir_rejects_bad_input():
    with pytest.raises(ValueError, match="size must be an integer >= 1"):
        Reservoir(0)
    with pytest.raises(ValueError, match="mode must be one of"):
        Reservoir(3, mode="fifo")
    res = Reservoir(3)
    res.add(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="X has 3 features"):
        res.add(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="2-D"):
        res.add(np.zeros(3))


# ================================================================== refits
@pytest.mark.parametrize("k_true", [2, 3, 4])
def test_refit_picks_true_k_by_bic(k_true):
    X, centres = blobs(k_true, seed=k_true)
    out = refit(X, None, [2, 3, 4], covariance_type="full", rng=0, n_init=2, n_seen=len(X))
    assert out.chosen_k == k_true
    row = out.row
    assert [c["k"] for c in row["candidates"]] == [2, 3, 4]
    bics = {c["k"]: c["bic"] for c in row["candidates"]}
    assert min(bics, key=bics.get) == k_true
    # the numbers are scikit-learn's formulas
    for cand in out.candidates:
        ll = cand.loglik * len(X)
        p = cand.result.params.n_parameters()
        assert cand.bic == pytest.approx(-2 * ll + p * np.log(len(X)))
        assert cand.aic == pytest.approx(-2 * ll + 2 * p)
    assert sorted(nearest(out.params.means, centres).tolist()) == list(range(k_true))
    json.dumps(row)


def test_information_criteria_match_sklearn():
    from sklearn.mixture import GaussianMixture

    X, _ = blobs(3, seed=5)
    gm = GaussianMixture(3, covariance_type="diag", random_state=0).fit(X)
    params = GaussianParams("diag", gm.weights_, gm.means_, gm.covariances_, gm.precisions_cholesky_)
    crit = information_criteria(X, params)
    assert crit["bic"] == pytest.approx(gm.bic(X), rel=1e-10)
    assert crit["aic"] == pytest.approx(gm.aic(X), rel=1e-10)
    assert crit["loglik"] == pytest.approx(gm.score(X), rel=1e-10)


def online_model(X, k, seed=0, ctype="full"):
    est = OnlineGaussianMixture(k, covariance_type=ctype, random_state=seed, warm_up=200,
                                warm_up_n_init=1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(X))
    for part in np.array_split(X[order], 6):
        est.partial_fit(part)
    return est


def test_warm_start_converges_in_few_iterations():
    X, _ = blobs(3, n_per=400, seed=11)
    est = online_model(X, 3)
    online = est._online
    out = refit(X, online.stats, [2, 3, 4], params=online.params, covariance_type="full", rng=0,
                tol=1e-3)
    warm = {c.k: c for c in out.candidates}[3]
    assert warm.warm_start and warm.converged
    assert warm.n_iter <= 4, warm.n_iter
    # it lands where a fresh multi-start fit lands
    cold = refit(X, None, [3], covariance_type="full", rng=0, tol=1e-3, n_init=3).candidates[0]
    assert warm.loglik == pytest.approx(cold.loglik, abs=1e-3)
    assert out.chosen_k == 3
    assert out.matching.labels.tolist() == [0, 1, 2]


@pytest.mark.parametrize("ctype", CTYPES)
def test_neighbour_starts_find_a_new_k_as_fresh_starts_do(ctype):
    """K +- 1 start from a split/merge of the online mixture: a 2-component model of 3 blobs refits to
    3 (split), a 4-component model of 3 blobs refits to 3 (merge), each with the likelihood of a fresh
    multi-start fit of that K."""
    X, centres = blobs(3, n_per=400, seed=12)
    for k_online, k_new in ((2, 3), (4, 3)):
        online = online_model(X, k_online, ctype=ctype)._online
        start = neighbour_start(X, online.params, k_new, online.reg_covar)
        assert start is not None and start.n_components == k_new
        assert start.weights.sum() == pytest.approx(1.0) and np.isfinite(start.means).all()
        out = refit(X, online.stats, [k_online, k_new], params=online.params, covariance_type=ctype,
                    rng=0, tol=1e-3)
        assert out.chosen_k == 3
        new = {c.k: c for c in out.candidates}[k_new]
        assert not new.warm_start  # placed by component matching, as a fresh start would be
        fresh = refit(X, None, [k_new], covariance_type=ctype, rng=0, tol=1e-3, n_init=3).candidates[0]
        assert new.loglik == pytest.approx(fresh.loglik, abs=1e-2)
        assert sorted(nearest(out.params.means, centres).tolist()) == [0, 1, 2]


def test_neighbour_start_declines_a_split_that_leaves_a_component_empty():
    X = np.vstack([np.zeros((300, 2)), np.ones((300, 2))])   # every row of a component on one point
    online = online_model(X + np.random.default_rng(0).normal(scale=1e-3, size=X.shape), 2)._online
    assert neighbour_start(X, online.params, 3, online.reg_covar) is None
    assert neighbour_start(X, online.params, 5, online.reg_covar) is None  # not a neighbour


@pytest.mark.parametrize("ctype", CTYPES)
def test_rescaling_keeps_total_weight(ctype):
    X, _ = blobs(3, seed=2)
    est = online_model(X, 3, ctype=ctype)
    stats = est._online.stats
    out = refit(X[:300], stats, [2, 3, 4], covariance_type=ctype, rng=0)
    assert out.stats.total_weight == pytest.approx(stats.total_weight, rel=1e-12)
    assert out.stats.total_weight != pytest.approx(300)
    # the parameters are what the online model recomputes from the statistics, exactly
    again = out.stats.to_params(est.reg_covar)
    assert np.array_equal(again.means, out.params.means)
    assert np.array_equal(again.precisions_cholesky, out.params.precisions_cholesky)


def test_refit_applies_to_online_state_and_learning_continues():
    X, _ = blobs(3, seed=4)
    est = online_model(X, 2)
    online = est._online
    t_before = online.t
    out = refit(X, online.stats, [2, 3], covariance_type="full", rng=0)
    assert out.chosen_k == 3
    out.apply_to(online)
    assert online.n_components == 3 and online.t == t_before
    assert online.stats is out.stats
    online.update(X[:100])
    assert online.params.n_components == 3 and online.params.is_finite()


# ================================================================== component identity
@pytest.mark.parametrize("ctype", CTYPES)
def test_permute_statistics_round_trip(ctype):
    X, _ = blobs(3, seed=3)
    stats = stats_from_labels(X, np.repeat(np.arange(3), 150), 3, ctype)
    order = np.array([2, 0, 1])
    perm = permute_statistics(stats, order)
    assert np.array_equal(perm.means, stats.means[order])
    assert perm.total_weight == stats.total_weight
    assert permute_statistics(perm, np.argsort(order)) == stats
    p = permute_params(stats.to_params(1e-6), order)
    q = perm.to_params(1e-6)
    assert np.allclose(p.precisions_cholesky, q.precisions_cholesky)
    with pytest.raises(ValueError, match="permutation of range"):
        permute_statistics(stats, [0, 0, 1])


def test_bhattacharyya_against_numerical_integral():
    def params(ctype, means, cov):
        cov = np.asarray(cov, dtype=float)
        stats_cov = {"full": cov[:, None, None], "spherical": cov, "diag": cov[:, None]}[ctype]
        from online_gmm._gaussian import get_kernel
        return GaussianParams(ctype, np.ones(len(means)) / len(means), np.asarray(means, float)[:, None],
                              stats_cov, get_kernel(ctype).precision_cholesky(stats_cov))

    a = params("full", [0.0, 1.0], [1.0, 0.25])
    b = params("spherical", [0.5, 3.0, 0.0], [2.0, 1.0, 1.0])
    dist = bhattacharyya_distances(a, b)
    for i in range(2):
        for j in range(3):
            pa = sps.norm(a.means[i, 0], np.sqrt(a.covariances[i, 0, 0]))
            pb = sps.norm(b.means[j, 0], np.sqrt(b.covariances[j]))
            bc, _ = integrate.quad(lambda x: np.sqrt(pa.pdf(x) * pb.pdf(x)), -30, 30)
            assert dist[i, j] == pytest.approx(-np.log(bc), rel=1e-6, abs=1e-9)
    assert bhattacharyya_distances(a, a).diagonal() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("ctype", CTYPES)
def test_matching_restores_ids_after_permutation(ctype):
    X, centres = blobs(4, seed=8)
    online = stats_from_labels(X, np.repeat(np.arange(4), 150), 4, ctype)
    for order in ([3, 1, 0, 2], [1, 2, 3, 0]):
        old = permute_statistics(online, order)            # the online model, in some order
        # a fresh refit (no warm start) finds the components in k-means order ...
        out = refit(X, old, [4], covariance_type=ctype, rng=1, warm_start=False)
        # ... and matching puts each back at its old index
        assert np.array_equal(nearest(out.params.means, centres), np.asarray(order))
        assert out.matching.labels.tolist() == [0, 1, 2, 3]
        assert out.matching.mapping.tolist() == [0, 1, 2, 3]
        assert np.allclose(out.params.means, old.means, atol=0.3)


def test_match_components_direct_permutation():
    X, _ = blobs(3, seed=9)
    p = stats_from_labels(X, np.repeat(np.arange(3), 150), 3).to_params(1e-6)
    order = np.array([1, 2, 0])
    m = match_components(p, permute_params(p, order))
    restored = permute_params(permute_params(p, order), m.order)
    assert np.array_equal(restored.means, p.means)


def test_ids_stable_when_k_grows_by_one():
    X, centres = blobs(3, seed=12)
    truth = np.repeat(np.arange(3), 150)
    # the online model has merged clusters 1 and 2 into its component 0; cluster 0 is its component 1
    old_labels = np.where(truth == 0, 1, 0)
    old = stats_from_labels(X, old_labels, 2)
    out = refit(X, old, [2, 3, 4], covariance_type="full", rng=0, labels=[0, 1], n_seen=450)
    assert out.chosen_k == 3
    assert out.matching.labels.tolist() == [0, 1, 2]
    assert out.matching.next_label == 3
    found = nearest(out.params.means, centres)
    assert found[1] == 0                         # the cluster the old component 1 covered keeps id 1
    assert set(found[[0, 2]].tolist()) == {1, 2}  # old id 0 goes to one half, the new id 2 to the other
    assert out.row["labels"] == [0, 1, 2]


def test_ids_survive_when_k_shrinks():
    X, centres = blobs(2, seed=13)
    truth = np.repeat(np.arange(2), 150)
    # the online model split cluster 1 into two components (positions 0 and 2), cluster 0 at 1
    rng = np.random.default_rng(0)
    old_labels = np.where(truth == 0, 1, np.where(rng.random(len(X)) < 0.5, 0, 2))
    old = stats_from_labels(X, old_labels, 3)
    out = refit(X, old, [2, 3], covariance_type="full", rng=0, labels=[5, 7, 9], next_label=12)
    assert out.chosen_k == 2
    m = out.matching
    assert m.next_label == 12                     # nothing new, no label spent
    assert m.mapping[1] >= 0                      # the old cluster-0 component survives ...
    assert m.labels[m.mapping[1]] == 7            # ... with its label
    assert sorted(m.mapping.tolist()) == [-1, 0, 1]
    assert set(m.labels.tolist()) < {5, 7, 9}
    # survivors are compacted in their old order
    survivors = np.flatnonzero(m.mapping >= 0)
    assert m.mapping[survivors].tolist() == [0, 1]


def test_refit_argument_errors():
    X, _ = blobs(2, n_per=5)
    with pytest.raises(ValueError, match="largest candidate K=20"):
        refit(X, None, [2, 20], covariance_type="full")
    with pytest.raises(ValueError, match="distinct ints >= 1"):
        refit(X, None, [2, 2], covariance_type="full")
    with pytest.raises(ValueError, match="criterion must be one of"):
        refit(X, None, [2], covariance_type="full", criterion="hqic")
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        refit(X, None, [2], covariance_type="banana")
    stats = stats_from_labels(X, np.repeat([0, 1], 5), 2, "diag")
    with pytest.raises(ValueError, match="do not match covariance_type='full'"):
        refit(X, stats, [2], covariance_type="full")


def test_aic_criterion_is_configurable():
    X, _ = blobs(3, seed=14)
    out = refit(X, None, [2, 3], covariance_type="diag", criterion="aic", rng=0)
    aics = {c.k: c.aic for c in out.candidates}
    assert out.chosen_k == min(aics, key=aics.get)
    assert out.row["criterion"] == "aic"


# ================================================================== history and plots
def test_bic_history_table_and_json():
    X, _ = blobs(3, seed=15)
    hist = BICHistory()
    for i, n in enumerate((200, 450)):
        hist.append(refit(X[:n], None, [2, 3], covariance_type="full", rng=i, n_seen=n).row)
    assert len(hist) == 2
    text = hist.table()
    lines = text.splitlines()
    assert lines[0].split() == ["refit", "n_seen", "chosen_k", "bic[k=2]", "bic[k=3]"]
    assert lines[2].split()[:3] == ["1", "450", "3"]
    assert lines[2].endswith("*")
    back = BICHistory.from_json(hist.to_json())
    assert back.rows == hist.rows
    assert BICHistory.from_arrays(*hist.to_arrays()).rows == hist.rows
    with pytest.raises(ValueError, match="candidates"):
        hist.append({"n_seen": 3})


def test_plots_render_with_agg():
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    X, _ = blobs(3, seed=16)
    hist = BICHistory()
    out = refit(X, None, [2, 3, 4], covariance_type="full", rng=0, n_seen=750)
    hist.append(out.row)
    hist.append(out.row)
    ax = plot_history(hist)
    assert len(ax.get_lines()) == 3
    ax2 = plot_components(out.params, X)
    assert len(ax2.patches) == 3
    for ctype in ("tied", "diag", "spherical"):
        p = refit(X, None, [3], covariance_type=ctype, rng=0).params
        plot_components(p, X[:50])
    plt.close("all")


def test_bic_history_is_bounded_and_keeps_the_refit_numbers_across_checkpoints():
    rows = [{"n_seen": 1000 * (i + 1), "time": 0.0, "chosen_k": 2,
             "candidates": [{"k": 2, "bic": 100.0 - i, "aic": 90.0, "loglik": -1.0}]} for i in range(5)]
    hist = BICHistory(max_rows=3)
    for r in rows:
        hist.append(r)
    assert [r["n_seen"] for r in hist.rows] == [3000, 4000, 5000] and hist.dropped == 2
    arrays, meta = hist.to_arrays()
    back = BICHistory.from_arrays(arrays, json.loads(json.dumps(meta)))
    assert back.rows == hist.rows and back.dropped == 2 and back.max_rows == 3
    assert [line.split()[0] for line in back.table().splitlines()[1:]] == ["2", "3", "4"]
    back.append(rows[0])
    assert len(back) == 3 and back.dropped == 3
    # a checkpoint written before the bound: every row kept, none dropped
    old = BICHistory.from_arrays({}, {"rows": hist.rows})
    assert old.rows == hist.rows and old.dropped == 0
