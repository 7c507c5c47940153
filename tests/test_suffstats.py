"""SufficientStatistics: exact merges, forgetting, serialisation, numerical stability."""

import numpy as np
import pytest

from online_gmm._gaussian import KERNELS
from online_gmm._suffstats import SufficientStatistics

TYPES = sorted(KERNELS)


def _data(seed, n=400, d=5, k=3):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d) + rng.normal(0, 5, size=d)
    resp = rng.dirichlet(np.ones(k), size=n)
    w = rng.uniform(0.1, 3.0, size=n)
    return X, resp, w


def _reference(X, resp, w, ctype):
    """Two-pass centred reference, component by component."""
    rw = resp * w[:, None]
    nk = rw.sum(0)
    means = rw.T @ X / nk[:, None]
    full = np.stack([(rw[:, k, None] * (X - means[k])).T @ (X - means[k]) for k in range(len(nk))])
    scatter = {"full": full, "tied": full.sum(0), "diag": np.einsum("kdd->kd", full),
               "spherical": np.einsum("kdd->k", full)}[ctype]
    return nk, means, scatter


@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_from_resp_matches_two_pass_reference(ctype, seed):
    X, resp, w = _data(seed)
    stats = SufficientStatistics.from_resp(X, resp, w, covariance_type=ctype)
    nk, means, scatter = _reference(X, resp, w, ctype)
    np.testing.assert_allclose(stats.weights, nk, rtol=1e-13)
    np.testing.assert_allclose(stats.means, means, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.scatter, scatter, rtol=1e-11)


@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.parametrize("splits", [[200], [1, 399], [37, 150, 311], list(range(10, 400, 10))])
def test_merge_of_shards_equals_whole(ctype, splits):
    X, resp, w = _data(3)
    whole = SufficientStatistics.from_resp(X, resp, w, covariance_type=ctype)
    merged = SufficientStatistics.zeros(3, X.shape[1], ctype)
    for idx in np.split(np.arange(len(X)), splits):
        merged += SufficientStatistics.from_resp(X[idx], resp[idx], w[idx], covariance_type=ctype)
    np.testing.assert_allclose(merged.weights, whole.weights, rtol=1e-12)
    np.testing.assert_allclose(merged.means, whole.means, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(merged.scatter, whole.scatter, rtol=1e-12)


@pytest.mark.parametrize("ctype", TYPES)
def test_merge_is_commutative_and_handles_empty(ctype):
    X, resp, w = _data(4)
    a = SufficientStatistics.from_resp(X[:100], resp[:100], w[:100], covariance_type=ctype)
    b = SufficientStatistics.from_resp(X[100:], resp[100:], w[100:], covariance_type=ctype)
    ab, ba = a + b, b + a
    np.testing.assert_allclose(ab.scatter, ba.scatter, rtol=1e-12)
    empty = SufficientStatistics.zeros(3, X.shape[1], ctype)
    assert (a + empty) == a
    np.testing.assert_array_equal((empty + a).scatter, a.scatter)
    # a component with zero weight in one operand
    resp0 = resp.copy()
    resp0[:100, 0] = 0.0
    c = SufficientStatistics.from_resp(X[:100], resp0[:100], None, covariance_type=ctype)
    assert c.weights[0] == 0.0 and np.all(np.isfinite(c.means))
    assert (c + b).is_finite()


@pytest.mark.parametrize("ctype", TYPES)
def test_scaling_is_forgetting_not_shape_change(ctype):
    X, resp, w = _data(5)
    s = SufficientStatistics.from_resp(X, resp, w, covariance_type=ctype)
    half = s.scale(0.5)
    np.testing.assert_allclose(half.weights, s.weights / 2)
    np.testing.assert_array_equal(half.means, s.means)
    np.testing.assert_allclose(half.covariances(0.0), s.covariances(0.0), rtol=1e-14)
    # sample_weight=2 is the same as the rows appearing twice
    doubled = SufficientStatistics.from_resp(np.vstack([X, X]), np.vstack([resp, resp]),
                                             np.concatenate([w, w]), covariance_type=ctype)
    twice = SufficientStatistics.from_resp(X, resp, 2 * w, covariance_type=ctype)
    np.testing.assert_allclose(twice.scatter, doubled.scatter, rtol=1e-12)
    with pytest.raises(ValueError, match="factor"):
        s.scale(float("nan"))
    with pytest.raises(ValueError, match="factor"):
        s.decay(-1.0)


@pytest.mark.parametrize("ctype", TYPES)
def test_large_offset_keeps_precision(ctype):
    """Data offset by 1e8: the scatter equals that of the unshifted data (no raw moments)."""
    X, resp, w = _data(6)
    Xs = X + 1e8
    shifted = SufficientStatistics.from_resp(Xs, resp, w, covariance_type=ctype)
    _, _, ref = _reference(Xs, resp, w, ctype)          # two-pass centred, on the same floats
    np.testing.assert_allclose(shifted.scatter, ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())
    plain = SufficientStatistics.from_resp(X, resp, w, covariance_type=ctype)
    # the inputs themselves are only stored to ~1.5e-8 at 1e8: compare at that scale
    tol = 1e-6 * np.abs(plain.scatter).max()
    np.testing.assert_allclose(shifted.scatter, plain.scatter, rtol=1e-6, atol=tol)
    merged = (SufficientStatistics.from_resp(X[:150] + 1e8, resp[:150], w[:150], covariance_type=ctype)
              + SufficientStatistics.from_resp(X[150:] + 1e8, resp[150:], w[150:], covariance_type=ctype))
    # merged means are themselves stored to ~1e-8 absolute at 1e8, which bounds Chan's cross term
    np.testing.assert_allclose(merged.scatter, ref, rtol=1e-7, atol=1e-7 * np.abs(ref).max())
    cov = merged.covariances(1e-6)
    assert np.all(np.isfinite(cov))


@pytest.mark.parametrize("ctype", TYPES)
def test_serialisation_round_trip_is_exact(ctype):
    X, resp, w = _data(7)
    s = SufficientStatistics.from_resp(X, resp, w, covariance_type=ctype)
    arrays, meta = s.to_arrays("m.")
    import json
    meta = json.loads(json.dumps(meta))
    assert SufficientStatistics.from_arrays(arrays, meta, "m.") == s
    assert SufficientStatistics.from_json(s.to_json()) == s


def test_bad_inputs_rejected():
    with pytest.raises(ValueError, match="covariance_type"):
        SufficientStatistics.zeros(2, 3, "banana")
    with pytest.raises(ValueError, match="inconsistent shapes"):
        SufficientStatistics("full", np.ones(2), np.zeros((2, 3)), np.zeros((2, 3)))
    a = SufficientStatistics.zeros(2, 3, "full")
    with pytest.raises(ValueError, match="different models"):
        a + SufficientStatistics.zeros(2, 3, "diag")
    arrays, meta = a.to_arrays()
    arrays["means"] = arrays["means"].copy()
    arrays["means"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        SufficientStatistics.from_arrays(arrays, meta)
    with pytest.raises(ValueError, match="format"):
        SufficientStatistics.from_arrays(arrays, {**meta, "format": 99})


@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.parametrize("case", ["plain", "tight_far_component", "offset_1e8"])
def test_scorer_pass_equals_two_pass_reference(ctype, case):
    """One E-step pass (statistics from the chunks the kernel centred, several chunks merged)
    equals the two-pass centred reference on the same responsibilities, including a tight
    component far from the centre, where the shifted sums of diag and spherical cancel and the
    guard recomputes that component centred on its own mean."""
    from online_gmm._em import Scorer
    from online_gmm._init import initial_params

    rng = np.random.RandomState(11)
    X = rng.normal(size=(3000, 6)) * 2.0
    if case == "tight_far_component":
        X[:1000] = 1e4 + rng.normal(size=(1000, 6)) * 1e-3
    elif case == "offset_1e8":
        X += 1e8
    params = initial_params(X, n_components=3, covariance_type=ctype, method="random_from_data",
                            reg_covar=1e-6, rng=np.random.RandomState(0))
    scorer = Scorer(params)
    scorer.rows = 700                                   # several chunks, merged by Chan's formula
    w = rng.uniform(0.5, 2.0, size=X.shape[0])
    stats, ll = scorer.expected_statistics(X, w)
    log_resp, log_norm = scorer.log_resp(X)
    nk, means, scatter = _reference(X, np.exp(log_resp), w, ctype)
    np.testing.assert_allclose(ll, log_norm @ w, rtol=1e-12)
    np.testing.assert_allclose(stats.weights, nk, rtol=1e-10)
    np.testing.assert_allclose(stats.means, means, rtol=1e-10, atol=1e-9)
    scale = np.abs(scatter).max()
    rtol = 1e-6 if case == "offset_1e8" else 1e-9
    np.testing.assert_allclose(stats.scatter, scatter, rtol=rtol, atol=rtol * scale * 1e-3)


@pytest.mark.parametrize("mode", ["one_pass", "per_block", "row_passes"])
@pytest.mark.parametrize("d", [4, 9, 13, 23])
def test_full_triangular_blocks_equal_the_dense_products(d, mode, monkeypatch):
    """The full kernel skips U^T's zeros and the scatter's mirrored half in row blocks once a chunk
    holds enough work; both paths give the same log-densities and statistics (and the reference).
    The blocks' products are either kept together (small chunks: one reduction, one
    multiplication) or handled block by block (large chunks), and the scatter of a large chunk
    may sum its blocks over several row ranges (bounded scratch); all three are checked."""
    from online_gmm import _blocks, _em, _log_prob, _scatter
    from online_gmm._em import Scorer
    from online_gmm._init import initial_params

    if mode != "one_pass":     # every module that reads it (each holds its own binding)
        monkeypatch.setattr(_scatter, "ONE_PASS_FLOATS", 0)
        monkeypatch.setattr(_log_prob, "ONE_PASS_FLOATS", 0)
        monkeypatch.setattr(_em, "ONE_PASS_FLOATS", 0)
    if mode == "row_passes":    # passes of 97 rows: several per chunk, the last one shorter
        bmax = max(hi - lo for lo, hi in _blocks._tri_blocks(d))
        monkeypatch.setattr(_scatter, "_SCATTER_ROWS_FLOATS", 97 * 3 * bmax)

    rng = np.random.RandomState(d)
    X = rng.normal(size=(900, d)) @ rng.normal(size=(d, d)) + rng.normal(0, 3, size=d)
    params = initial_params(X, n_components=3, covariance_type="full", method="random_from_data",
                            reg_covar=1e-6, rng=np.random.RandomState(1))
    results = {}
    guard_calls = _count_rescatter(monkeypatch, RESCATTER["full"])
    for name, work in (("dense", 1 << 62), ("blocks", 0)):
        monkeypatch.setattr(_blocks, "_TRI_MIN_WORK", work)
        assert _blocks._use_blocks(900, 3, d) == (name == "blocks")
        scorer = Scorer(params)
        results[name] = (scorer.weighted_log_prob(X), scorer.expected_statistics(X))
    # the blocked statistics came from the shifted sums themselves: the cancellation guard (which
    # would recompute wrong entries exactly and hide the error) never fired
    assert guard_calls == []
    assert len(_blocks._tri_blocks(d)) == max(1, d // 4)
    (lp_d, (st_d, ll_d)), (lp_b, (st_b, ll_b)) = results["dense"], results["blocks"]
    np.testing.assert_allclose(lp_b, lp_d, rtol=1e-12, atol=1e-12 * np.abs(lp_d).max())
    np.testing.assert_allclose(ll_b, ll_d, rtol=1e-13)
    np.testing.assert_allclose(st_b.means, st_d.means, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(st_b.scatter, st_d.scatter, rtol=1e-11,
                               atol=1e-12 * np.abs(st_d.scatter).max())
    np.testing.assert_array_equal(st_b.scatter, np.swapaxes(st_b.scatter, 1, 2))   # symmetric
    log_resp, _ = Scorer(params).log_resp(X)
    resp = np.exp(log_resp)
    _, _, ref = _reference(X, resp, np.ones(len(X)), "full")
    np.testing.assert_allclose(st_b.scatter, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
    # from_resp on data it centres itself (not a Scorer chunk): the same blocks, summed over row
    # passes of bounded scratch in mode "row_passes"
    direct = SufficientStatistics.from_resp(X, resp, covariance_type="full")
    assert guard_calls == []
    np.testing.assert_allclose(direct.scatter, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
    np.testing.assert_array_equal(direct.scatter, np.swapaxes(direct.scatter, 1, 2))


#: the guards' recomputation of cancelled scatter entries, per covariance type
RESCATTER = {"full": "_rescatter_rows_full", "diag": "_rescatter_diag"}


def _count_rescatter(monkeypatch, name):
    """Spy on a guard's recomputation: per call, the (component, feature) pairs it recomputed."""
    from online_gmm import _scatter

    real = getattr(_scatter, name)
    calls = []

    def counting(out, Xc, resp, means, low):
        calls.append({(int(k), int(j)) for k, j in np.argwhere(low)})
        return real(out, Xc, resp, means, low)

    monkeypatch.setattr(_scatter, name, counting)
    return calls


@pytest.mark.parametrize("guard", [True, "in_groups", False])
def test_full_scatter_guard_recomputes_cancelling_components(guard, monkeypatch):
    """The full scatter is formed from sums about the chunk's centre, corrected by the component
    means. For a tight component far from the centre the correction cancels most digits; the guard
    recomputes that component's cancelled rows and columns centred on its own mean (in groups of
    pairs that bound its scratch memory: "in_groups" takes 2 pairs at a time). Without the guard
    the same case loses many digits, so the test shows the guard is what keeps it exact. (Small
    chunks take the exact path directly.)"""
    from online_gmm import _blocks, _scatter

    if guard == "in_groups":
        monkeypatch.setattr(_scatter, "_PAIR_FLOATS", 2 * 1200)
        assert len(_scatter._pair_groups(7, 1200)) == 4

    rng = np.random.RandomState(5)
    d = 7
    X = rng.normal(size=(1200, d)) * 100.0
    X[:400] = 1e3 + rng.normal(size=(400, d)) * 1e-3 @ rng.normal(size=(d, d))
    resp = np.zeros((1200, 3))
    resp[:400, 0] = 1.0
    resp[400:, 1:] = rng.dirichlet([1.0, 1.0], size=800)
    w = np.ones(len(X))
    calls = _count_rescatter(monkeypatch, RESCATTER["full"])
    monkeypatch.setattr(_blocks, "_TRI_MIN_WORK", 0)      # the shifted path (large chunks)
    if not guard:
        monkeypatch.setattr(_scatter, "_CANCEL", 0.0)
    centre = np.full(d, 1e3 / 3)                       # as the Scorer centres: mean of the means
    stats = SufficientStatistics.from_resp(X - centre, resp, covariance_type="full")
    _, _, ref = _reference(X, resp, w, "full")
    err = np.abs(stats.scatter - ref).max(axis=(1, 2)) / np.abs(ref).max(axis=(1, 2))
    if guard:                                             # the far tight component, no other
        assert calls == [{(0, j) for j in range(d)}], calls
        assert err.max() < 1e-9, err
    else:
        assert calls == []
        assert err[0] > 1e-6, err                         # many digits lost without the guard
    np.testing.assert_allclose(stats.scatter[1:], ref[1:], rtol=1e-10,
                               atol=1e-12 * np.abs(ref[1:]).max())


@pytest.mark.parametrize("far", [False, True])
@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_constant_feature_does_not_send_components_to_the_exact_path(ctype, far, monkeypatch):
    """A feature with one value on every row cancels completely in the shifted sums, yet its
    scatter is exactly zero (and so is its cross scatter with every other feature): the guard
    zeroes it instead of recomputing it for every component, which made one constant column cost
    1.7x per EM iteration (B, full). A tight component far from the centre is still recomputed,
    and only it."""
    from online_gmm import _blocks

    rng = np.random.RandomState(11)
    d, const = 6, [1, 4]
    X = rng.normal(size=(1200, d)) * 100.0
    if far:
        X[:400] = 1e3 + rng.normal(size=(400, d)) * 1e-3 @ rng.normal(size=(d, d))
    X[:, const] = [3.7, -1e4 / 3]
    resp = np.zeros((1200, 3))
    resp[:400, 0] = 1.0
    resp[400:, 1:] = rng.dirichlet([1.0, 1.0], size=800)
    # the kernel's centre, the mean of the component means, lands within rounding of a constant
    # feature's value; a few ulps off, the feature's centred values are a tiny constant (3 ulps:
    # not a power of two, so its products round) whose shifted sums cancel
    centre = np.full(d, 1e3 / 3 if far else 0.0)
    centre[const] = X[0, const] + 3 * np.spacing(X[0, const])
    calls = _count_rescatter(monkeypatch, RESCATTER[ctype])
    monkeypatch.setattr(_blocks, "_TRI_MIN_WORK", 0)      # full: the shifted path
    stats = SufficientStatistics.from_resp(X - centre, resp, covariance_type=ctype, centre=centre)
    # the far tight component cancels on every feature but the constant ones (set to zero)
    assert calls == ([{(0, j) for j in range(d) if j not in const}] if far else []), calls
    _, _, ref = _reference(X, resp, np.ones(len(X)), ctype)
    if ctype == "full":
        assert np.all(stats.scatter[:, const, :] == 0.0) and np.all(stats.scatter[:, :, const] == 0.0)
        scale = np.abs(ref).max(axis=(1, 2), keepdims=True)
    else:
        assert np.all(stats.scatter[:, const] == 0.0)
        scale = np.abs(ref).max(axis=1, keepdims=True)
    assert np.all(np.abs(stats.scatter - ref) <= 1e-9 * scale)


@pytest.mark.parametrize("one_pair_at_a_time", [False, True])
@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_feature_constant_within_a_component_recomputes_only_its_entries(ctype, one_pair_at_a_time,
                                                                          monkeypatch):
    """Binary codes that are pure within each component (one-hot columns of clustered data) have
    no spread inside a component, so its shifted sums cancel there while the chunk's do not. The
    guard recomputes exactly those (component, feature) entries (full: their rows and columns),
    not whole components: such data used to send every component through the exact path, 1.7x
    per EM iteration for full and 3.3x for diag at K=16, D=50. The result equals the two-pass
    reference, and the full scatter stays exactly symmetric."""
    from online_gmm import _blocks, _scatter

    rng = np.random.RandomState(12)
    n, k_comp = 1500, 3
    labels = rng.randint(k_comp, size=n)
    centres = rng.normal(size=(k_comp, 4)) * 5.0
    codes = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])           # per component
    X = np.hstack([centres[labels] + rng.normal(size=(n, 4)), codes[labels]])
    # components 0 and 1 share the rows of labels 0 and 1 softly: pure in the second code (1 for
    # both labels) only; component 2 has exactly the rows of label 2: pure in both codes
    resp = np.array([[0.7, 0.3, 0.0], [0.3, 0.7, 0.0], [0.0, 0.0, 1.0]])[labels]
    _, means, ref = _reference(X, resp, np.ones(n), ctype)
    centre = means.mean(axis=0)                                       # as the Scorer centres
    calls = _count_rescatter(monkeypatch, RESCATTER[ctype])
    monkeypatch.setattr(_blocks, "_TRI_MIN_WORK", 0)                # full: the shifted path
    if one_pair_at_a_time:                                            # the bounded-memory groups
        monkeypatch.setattr(_scatter, "_PAIR_FLOATS", n)
    stats = SufficientStatistics.from_resp(X - centre, resp, covariance_type=ctype, centre=centre)
    assert calls == [{(0, 5), (1, 5), (2, 4), (2, 5)}], calls
    if ctype == "full":
        np.testing.assert_array_equal(stats.scatter, np.swapaxes(stats.scatter, 1, 2))
        scale = np.sqrt(np.einsum("kdd->kd", ref))                    # sqrt(S_jj), per component
        bound = 1e-9 * scale[:, :, None] * scale[:, None, :] + 1e-12 * np.abs(ref).max()
    else:
        bound = 1e-9 * ref + 1e-12 * np.abs(ref).max()
    assert np.all(np.abs(stats.scatter - ref) <= bound)


@pytest.mark.parametrize("ctype", TYPES)
def test_one_row_has_exactly_zero_scatter(ctype):
    """One row about its own mean has no spread: the scatter is exactly zero (the shifted sums of
    diag and spherical cancel completely here: diag's guard sees every feature constant over the
    chunk and sets it to zero, spherical's recomputes; full takes the exact path for small
    chunks), far from the origin too."""
    x = np.array([[1e6 + 0.1, -3e5, 7.25, 1e-3]])
    stats = SufficientStatistics.from_resp(x, np.array([[0.25, 0.75]]), covariance_type=ctype)
    assert np.all(stats.scatter == 0.0)
    np.testing.assert_array_equal(stats.means, np.vstack([x, x]))


# ----------------------------------------------------------------------------- a pass's raw sums
def _count_merges(monkeypatch):
    """Spy on Chan's merge: one entry per call."""
    calls = []
    real = SufficientStatistics.__iadd__

    def counting(self, other):
        calls.append(other.total_weight)
        return real(self, other)

    monkeypatch.setattr(SufficientStatistics, "__iadd__", counting)
    return calls


@pytest.mark.parametrize("ctype", TYPES)
def test_pass_sums_chunks_without_merging(ctype, monkeypatch):
    """A Scorer pass sums its chunks' raw moments about the kernel's centre and corrects them once:
    no chunk goes through Chan's merge (tied, which has no such form, merges every chunk after
    the first). The statistics equal the two-pass reference, and the chunking does not matter."""
    from online_gmm import _blocks
    from online_gmm._em import Scorer
    from online_gmm._init import initial_params

    monkeypatch.setattr(_blocks, "_TRI_MIN_WORK", 0)         # full: 400-row chunks use blocks
    rng = np.random.RandomState(21)
    X = rng.normal(size=(2500, 6)) @ rng.normal(size=(6, 6)) + rng.normal(0, 4, size=6)
    params = initial_params(X, n_components=3, covariance_type=ctype, method="random_from_data",
                            reg_covar=1e-6, rng=np.random.RandomState(0))
    w = rng.uniform(0.5, 2.0, size=len(X))
    results = []
    for rows in (400, 2500):
        scorer = Scorer(params)
        scorer.rows = rows
        merges = _count_merges(monkeypatch)
        results.append(scorer.expected_statistics(X, w)[0])
        chunks = -(-len(X) // rows)
        assert len(merges) == (chunks - 1 if ctype == "tied" else 0), merges
        monkeypatch.undo()
        monkeypatch.setattr(_blocks, "_TRI_MIN_WORK", 0)
    nk, means, ref = _reference(X, np.exp(Scorer(params).log_resp(X)[0]), w, ctype)
    scale = np.abs(ref).max()
    for stats in results:
        np.testing.assert_allclose(stats.weights, nk, rtol=1e-12)
        np.testing.assert_allclose(stats.means, means, rtol=1e-11, atol=1e-11)
        np.testing.assert_allclose(stats.scatter, ref, rtol=1e-10, atol=1e-12 * scale)
    if ctype == "full":
        np.testing.assert_array_equal(results[0].scatter, np.swapaxes(results[0].scatter, 1, 2))


def test_pass_sums_merge_a_full_chunk_too_small_for_the_blocks(monkeypatch):
    """A full pass whose last chunk is too small for the triangular blocks: that chunk's statistics
    come from the exact path and are merged (once) into the summed chunks; the result equals the
    two-pass reference."""
    from online_gmm import _blocks
    from online_gmm._em import Scorer
    from online_gmm._init import initial_params

    rng = np.random.RandomState(22)
    X = rng.normal(size=(2100, 6)) @ rng.normal(size=(6, 6)) + 7.0
    params = initial_params(X, n_components=3, covariance_type="full", method="random_from_data",
                            reg_covar=1e-6, rng=np.random.RandomState(0))
    # rows x K x D^2: 400-row chunks 43200 (blocks), the last 100-row chunk 10800 (exact path)
    monkeypatch.setattr(_blocks, "_TRI_MIN_WORK", 20000)
    scorer = Scorer(params)
    scorer.rows = 400
    merges = _count_merges(monkeypatch)
    stats, _ = scorer.expected_statistics(X)
    assert merges == [pytest.approx(100.0, rel=1e-12)], merges
    nk, means, ref = _reference(X, np.exp(scorer.log_resp(X)[0]), np.ones(len(X)), "full")
    np.testing.assert_allclose(stats.weights, nk, rtol=1e-12)
    np.testing.assert_allclose(stats.means, means, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(stats.scatter, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("ctype", ["full", "diag", "spherical"])
def test_pass_sums_finish_cancelling_chunks_on_their_own(ctype, monkeypatch):
    """A chunk whose correction would cancel (here the chunks holding a tight component far from
    the centre) is finished by the guard about its own means and merged by Chan's formula; the
    other chunks are summed. Exactly the chunks with that component are merged, and the result
    equals the two-pass reference, the tight component included."""
    from online_gmm import _blocks
    from online_gmm._pass_sums import PassAccumulator

    monkeypatch.setattr(_blocks, "_TRI_MIN_WORK", 0)
    rng = np.random.RandomState(8)
    d, n = 5, 3000
    X = rng.normal(size=(n, d)) * 50.0
    X[1000:1600] = 1e3 + rng.normal(size=(600, d)) * 1e-3            # chunks 2 and 3 of 500
    resp = np.zeros((n, 2))
    resp[1000:1600, 0] = 1.0
    resp[:1000, 1] = resp[1600:, 1] = 1.0
    resp[:1000] = rng.dirichlet([1.0, 3.0], size=1000)               # some weight everywhere
    centre = np.full(d, 500.0)
    Z = X - centre
    merges = _count_merges(monkeypatch)
    acc = PassAccumulator(ctype, centre)
    for a in range(0, n, 500):
        z = Z[a:a + 500]
        rt = np.ascontiguousarray(resp[a:a + 500].T)
        xt1 = np.vstack([np.ones(len(z)), z.T])
        squares = {"full": None, "diag": z * z, "spherical": np.einsum("nd,nd->n", z, z)}[ctype]
        assert acc.add(z, rt, squares=squares, xt1=xt1)
    stats = acc.statistics()
    # the two cancelling chunks (rows 1000-1999): the second merged into the first, then both
    # (weight 1000) into the summed rest
    assert merges == [500.0, 1000.0], merges
    nk, means, ref = _reference(X, resp, np.ones(n), ctype)
    np.testing.assert_allclose(stats.weights, nk, rtol=1e-12)
    np.testing.assert_allclose(stats.means, means, rtol=1e-12, atol=1e-9)
    axes = tuple(range(1, ref.ndim))
    scale = np.abs(ref).max(axis=axes, keepdims=True) if axes else np.abs(ref)
    assert np.all(np.abs(stats.scatter - ref) <= 1e-9 * scale)


@pytest.mark.parametrize("ctype", ["full", "diag", "spherical"])
def test_pass_sums_component_without_weight(ctype, monkeypatch):
    """A component with no responsibility anywhere gets zero weight, zero scatter and the centre as
    its mean, as from_resp gives it (whose mean for a zero weight is the centre too)."""
    from online_gmm import _blocks
    from online_gmm._pass_sums import PassAccumulator

    monkeypatch.setattr(_blocks, "_TRI_MIN_WORK", 0)
    rng = np.random.RandomState(9)
    X = rng.normal(size=(600, 4)) * 3.0 + 10.0
    resp = np.zeros((600, 3))
    resp[:, [0, 2]] = rng.dirichlet([1.0, 1.0], size=600)
    centre = X.mean(axis=0)
    Z = X - centre
    acc = PassAccumulator(ctype, centre)
    for a in range(0, 600, 200):
        z = Z[a:a + 200]
        squares = {"full": None, "diag": z * z, "spherical": np.einsum("nd,nd->n", z, z)}[ctype]
        assert acc.add(z, np.ascontiguousarray(resp[a:a + 200].T), squares=squares,
                       xt1=np.vstack([np.ones(200), z.T]))
    stats = acc.statistics()
    direct = SufficientStatistics.from_resp(Z, resp, covariance_type=ctype, centre=centre)
    assert stats.weights[1] == 0.0 and np.all(stats.scatter[1] == 0.0)
    np.testing.assert_array_equal(stats.means[1], centre)
    np.testing.assert_array_equal(direct.means[1], centre)
    np.testing.assert_allclose(stats.scatter, direct.scatter, rtol=1e-11,
                               atol=1e-12 * np.abs(direct.scatter).max())


def test_pass_sums_decline_what_has_no_raw_form():
    """Tied, a full chunk too small for the triangular blocks, and a chunk without what the
    kernel leaves (diag without its squares) are declined: nothing is added."""
    from online_gmm._pass_sums import PassAccumulator

    z = np.random.RandomState(0).normal(size=(5, 3))
    rt = np.full((2, 5), 0.5)
    xt1 = np.vstack([np.ones(5), z.T])
    assert not PassAccumulator("tied", np.zeros(3)).add(z, rt, xt1=xt1)
    full = PassAccumulator("full", np.zeros(3))
    assert not full.add(z, rt, xt1=xt1)                         # 5 rows: the exact path
    assert full.statistics() is None
    assert not PassAccumulator("diag", np.zeros(3)).add(z, rt)
    assert not PassAccumulator("spherical", np.zeros(3)).add(z, rt, squares=z * z)
