"""Dask map-reduce EM (online_gmm.distributed) against the in-memory estimator.

One real ``distributed.LocalCluster`` (2 worker processes, 1 thread each, 127.0.0.1, a 400 MB memory
limit per worker) serves the whole module and is closed at the end. Its client is not set as the
default, so the tests without ``client=`` run on Dask's threaded scheduler.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
pd = pytest.importorskip("pandas")

from online_gmm import OnlineGaussianMixture  # noqa: E402
from online_gmm import distributed as odist  # noqa: E402
from online_gmm.distributed import DaskGaussianMixture, refit_on_dask  # noqa: E402

CTYPES = ["full", "tied", "diag", "spherical"]
MEMORY_LIMIT = 400e6
RTOL = 1e-8


@pytest.fixture(scope="module")
def cluster():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cl = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=None,
                                      memory_limit=int(MEMORY_LIMIT))
    try:
        yield cl
    finally:
        cl.close()


@pytest.fixture(scope="module")
def client(cluster):
    c = distributed.Client(cluster, set_as_default=False)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(7)
    X = np.vstack([rng.normal(-3, 1.0, (1500, 3)), rng.normal(3, 1.5, (1500, 3)),
                   rng.normal([0, 6, 0], 0.6, (1000, 3))])
    return X[rng.permutation(len(X))]


def _inits(X, ctype, k=3):
    """Deliberately imperfect starting parameters (from an in-memory fit on a slice)."""
    ref = OnlineGaussianMixture(n_components=k, covariance_type=ctype, random_state=0).fit(X[:400])
    return dict(n_components=k, covariance_type=ctype, tol=1e-6, max_iter=200,
                weights_init=ref.weights_, means_init=ref.means_ + 0.4, precisions_init=ref.precisions_)


def _assert_same_fit(got, ref):
    assert got.n_iter_ == ref.n_iter_
    assert got.converged_ == ref.converged_
    np.testing.assert_allclose(got.lower_bound_, ref.lower_bound_, rtol=RTOL)
    np.testing.assert_allclose(got.lower_bounds_, ref.lower_bounds_, rtol=RTOL)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=RTOL, atol=1e-12,
                                   err_msg=name)
    np.testing.assert_allclose(got.stats_.weights, ref.stats_.weights, rtol=RTOL)
    np.testing.assert_allclose(got.stats_.scatter, ref.stats_.scatter, rtol=RTOL)
    assert got.n_samples_seen_ == ref.n_samples_seen_
    assert got.n_features_in_ == ref.n_features_in_


# ---------------------------------------------------------------------- full-batch EM
@pytest.mark.parametrize("ctype", CTYPES)
def test_fit_on_cluster_equals_in_memory_fit(client, data, ctype):
    params = _inits(data, ctype)
    ref = OnlineGaussianMixture(**params).fit(data)
    Xd = client.persist(da.from_array(data, chunks=(700, 3)))      # uneven last chunk
    got = DaskGaussianMixture(**params).fit(Xd, client=client)
    assert ref.n_iter_ > 2
    _assert_same_fit(got, ref)


@pytest.mark.parametrize("ctype", CTYPES)
def test_fit_without_client_equals_in_memory_fit(data, ctype):
    with pytest.raises(ValueError):      # no default client: Dask's threaded scheduler runs it
        distributed.default_client()
    params = _inits(data, ctype)
    ref = OnlineGaussianMixture(**params).fit(data)
    got = DaskGaussianMixture(**params).fit(da.from_array(data, chunks=(1000, 3)))
    _assert_same_fit(got, ref)


def test_weighted_fit_equals_in_memory_fit(client, data):
    w = np.random.RandomState(1).uniform(0.1, 3.0, len(data))
    params = _inits(data, "full")
    ref = OnlineGaussianMixture(**params).fit(data, sample_weight=w)
    got = DaskGaussianMixture(**params).fit(da.from_array(data, chunks=(900, 3)),
                                            sample_weight=da.from_array(w, chunks=450), client=client)
    _assert_same_fit(got, ref)
    np.testing.assert_allclose(got._online.weight_seen, w.sum(), rtol=1e-12)


def test_only_statistics_come_back_to_the_client(client, data, monkeypatch):
    seen = []
    real = odist._compute

    def spy(obj, c):
        out = real(obj, c)
        seen.append(out)
        return out

    monkeypatch.setattr(odist, "_compute", spy)
    params = _inits(data, "diag")
    got = DaskGaussianMixture(**params).fit(da.from_array(data, chunks=(500, 3)), client=client)
    assert len(seen) == got.n_iter_           # one pass per EM iteration
    assert all(isinstance(part, odist._Partial) for part in seen)
    assert all(part.n_samples == len(data) for part in seen)


def test_warm_start_and_init_model(client, data):
    params = _inits(data, "full")
    short = dict(params, max_iter=3)
    Xd = da.from_array(data, chunks=(800, 3))
    ref = OnlineGaussianMixture(**short, warm_start=True)
    got = DaskGaussianMixture(**short, warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")               # max_iter=3: "did not converge"
        ref.fit(data).fit(data)                       # the second fit continues from the first
        got.fit(Xd, client=client).fit(Xd, client=client)
    _assert_same_fit(got, ref)

    start = OnlineGaussianMixture(n_components=3, random_state=0).fit(data[:300])
    from_model = DaskGaussianMixture(n_components=3, tol=1e-6).fit(Xd, init=start, client=client)
    from_inits = OnlineGaussianMixture(n_components=3, tol=1e-6, weights_init=start.weights_,
                                       means_init=start.means_,
                                       precisions_init=start.precisions_).fit(data)
    _assert_same_fit(from_model, from_inits)


def test_initialisation_from_a_sample_of_chunks(client):
    rng = np.random.RandomState(3)
    X = np.vstack([rng.normal(-6, 1, (4000, 2)), rng.normal(6, 1, (4000, 2))])
    X = X[rng.permutation(len(X))]
    Xd = da.from_array(X, chunks=(1000, 2))
    gm = DaskGaussianMixture(n_components=2, random_state=0).fit(Xd, client=client, init_size=1500)
    np.testing.assert_allclose(np.sort(gm.means_[:, 0]), [-6, 6], atol=0.1)
    assert gm.converged_ and gm.n_samples_seen_ == len(X)
    # same seed, same sample, same fit
    again = DaskGaussianMixture(n_components=2, random_state=0).fit(Xd, client=client, init_size=1500)
    np.testing.assert_array_equal(again.means_, gm.means_)


# ---------------------------------------------------------------------- lazy scoring, dataframes
def test_lazy_scoring_equals_in_memory(client, data):
    params = _inits(data, "tied")
    model = DaskGaussianMixture(**params).fit(data)       # NumPy in: chunked, threaded
    ref = OnlineGaussianMixture(**params).fit(data)
    Xd = da.from_array(data, chunks=(650, 3))
    lazy = {"predict": model.predict(Xd), "predict_proba": model.predict_proba(Xd),
            "score_samples": model.score_samples(Xd)}
    assert all(isinstance(v, da.Array) for v in lazy.values())
    assert lazy["predict_proba"].chunks == (Xd.chunks[0], (3,))
    computed = dict(zip(lazy, client.gather(client.compute(list(lazy.values())))))
    np.testing.assert_array_equal(computed["predict"], ref.predict(data))
    np.testing.assert_allclose(computed["predict_proba"], ref.predict_proba(data), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(computed["score_samples"], ref.score_samples(data), rtol=1e-9)
    np.testing.assert_allclose(model.score(Xd), ref.score(data), rtol=1e-9)
    np.testing.assert_allclose(model.score_samples(data), ref.score_samples(data), rtol=1e-9)
    np.testing.assert_array_equal(DaskGaussianMixture(**params).fit_predict(Xd).compute(),
                                  ref.predict(data))
    with pytest.raises(ValueError, match="expecting 3 features"):
        model.predict(Xd[:, :2])


def test_dataframe_fit_and_scoring(client, data):
    pdf = pd.DataFrame(data, columns=["a", "b", "c"])
    ddf = dd.from_pandas(pdf, npartitions=5)
    w = np.linspace(0.5, 2.0, len(data))
    dw = dd.from_pandas(pd.Series(w), npartitions=5)
    params = _inits(data, "diag")
    ref = OnlineGaussianMixture(**params).fit(pdf, sample_weight=w)
    got = DaskGaussianMixture(**params).fit(ddf, sample_weight=dw, client=client)
    _assert_same_fit(got, ref)
    assert list(got.feature_names_in_) == ["a", "b", "c"]
    labels = got.predict(ddf)
    assert isinstance(labels, da.Array)
    np.testing.assert_array_equal(labels.compute(scheduler=client), ref.predict(pdf))


# ---------------------------------------------------------------------- one-pass stream
@pytest.mark.parametrize("use_client", [True, False])
def test_stream_equals_partial_fit_on_the_same_chunks(client, data, use_client):
    kw = dict(n_components=3, warm_up=600, random_state=0)
    Xd = da.from_array(data, chunks=(250, 3))
    w = np.random.RandomState(2).uniform(0.5, 1.5, len(data))
    got = DaskGaussianMixture(**kw).partial_fit_stream(
        Xd, sample_weight=da.from_array(w, chunks=250), client=client if use_client else None)
    ref = OnlineGaussianMixture(**kw)
    for a in range(0, len(data), 250):
        ref.partial_fit(data[a:a + 250], sample_weight=w[a:a + 250])
    assert got.n_samples_seen_ == ref.n_samples_seen_ == len(data)
    np.testing.assert_array_equal(got.means_, ref.means_)
    np.testing.assert_array_equal(got.covariances_, ref.covariances_)
    np.testing.assert_array_equal(got.stats_.scatter, ref.stats_.scatter)


# ---------------------------------------------------------------------- pipeline hook
def test_refit_on_dask_with_a_scheduler_address(cluster, data):
    params = _inits(data, "spherical")
    got = refit_on_dask(data, cluster.scheduler_address, chunk_rows=600, **params)
    assert type(got) is OnlineGaussianMixture
    _assert_same_fit(got, OnlineGaussianMixture(**params).fit(data))


# ---------------------------------------------------------------------- errors
def test_errors_name_the_problem(client, data):
    bad = data.copy()
    bad[1234, 1] = np.nan
    params = _inits(data, "diag")
    with pytest.raises(ValueError, match="NaN or infinity"):
        DaskGaussianMixture(**params).fit(da.from_array(bad, chunks=(500, 3)), client=client)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(4000,\)"):
        DaskGaussianMixture(**params).fit(da.from_array(data, chunks=(500, 3)),
                                          sample_weight=np.ones(10))
    with pytest.raises(ValueError, match="must be >= 0"):
        DaskGaussianMixture(**params).fit(da.from_array(data, chunks=(500, 3)),
                                          sample_weight=-np.ones(len(data)))
    with pytest.raises(ValueError, match="init has 3 'full' components"):
        DaskGaussianMixture(n_components=2).fit(
            da.from_array(data, chunks=(500, 3)),
            init=OnlineGaussianMixture(n_components=3, random_state=0).fit(data[:200]))


def test_missing_dask_gives_an_install_hint():
    code = ("import sys; sys.modules['dask'] = None; sys.modules['dask.array'] = None\n"
            "try:\n    import online_gmm.distributed\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install online-gmm[dask]" in out.stdout, out.stderr


# ---------------------------------------------------------------------- larger than memory
def _own_peak_rss() -> int:
    """Peak RSS of this process's own memory, in bytes (``VmHWM``).

    Not ``getrusage``'s ``ru_maxrss``: a spawned worker inherits its parent's peak there (Linux keeps
    the larger of the pre-exec and post-exec peaks), so under a full test run every worker would report
    the size of the pytest process that started it.
    """
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_data_larger_than_worker_memory(client):
    """1.74 GB generated lazily on the workers, > 2x the 2 x 400 MB limits; no worker restarts."""
    before = client.run(lambda: __import__("os").getpid())
    n, d, rows = 3_400_000, 64, 15_625                 # 218 chunks of 8 MB
    rng = da.random.default_rng(0)
    labels = rng.integers(0, 2, size=n, chunks=rows)
    X = rng.random((n, d), chunks=(rows, d)) + 6.0 * labels[:, None]
    assert X.nbytes > 2 * 2 * MEMORY_LIMIT
    # one EM iteration (one pass over the 1.74 GB): the point is the memory, and from these starts
    # one M-step already lands on the clusters' means and variances
    gm = DaskGaussianMixture(n_components=2, covariance_type="diag", max_iter=1, tol=0.0,
                             weights_init=[0.5, 0.5], means_init=[[0.0] * d, [6.0] * d],
                             precisions_init=np.ones((2, d)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                # tol=0: "did not converge"
        gm.fit(X, client=client)
    assert gm.n_iter_ == 1 and gm.n_samples_seen_ == n
    np.testing.assert_allclose(gm.means_, [[0.5] * d, [6.5] * d], atol=0.01)
    np.testing.assert_allclose(gm.covariances_, 1 / 12, rtol=0.02)
    assert client.run(lambda: __import__("os").getpid()) == before      # same workers, no restart
    peak = client.run(_own_peak_rss)
    print("peak RSS per worker (MB):", {k: v / 1e6 for k, v in peak.items()})
    assert len(peak) == 2 and max(peak.values()) < MEMORY_LIMIT, peak


def test_pipeline_refits_on_the_cluster_equal_local_refits(cluster, tmp_path):
    """``[refit] dask_scheduler``: the refits run on a worker; same draws, same history as locally."""
    from online_gmm.cli import build_pipeline
    from online_gmm.config import parse_config
    from online_gmm.demo import DEMO_FIELDS, write_events
    from online_gmm.distributed import make_dask_refit

    path = tmp_path / "events.jsonl"
    write_events(path, n=4000, seed=4, anomaly_rate=0.0)
    rows = []
    for scheduler in (None, cluster.scheduler_address):
        cfg = parse_config({
            "source": {"type": "jsonl", "path": str(path), "fields": DEMO_FIELDS},
            "model": {"n_components": 3, "warm_up": 800, "random_state": 0},
            "pipeline": {"batch_size": 500},
            "refit": {"every": 1500, "candidates": [2, 3, 4], "reservoir_size": 1000,
                      "dask_scheduler": scheduler}})
        pipe = build_pipeline(cfg, refit_fn=None if scheduler is None else make_dask_refit(scheduler))
        pipe.run()
        pipe.close()
        rows.append([(r["chosen_k"], [round(c["bic"], 6) for c in r["candidates"]]) for r in pipe.history])
    assert len(rows[0]) == 4000 // 1500
    assert rows[0] == rows[1]
