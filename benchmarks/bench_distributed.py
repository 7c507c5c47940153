"""Time per EM iteration: Dask map-reduce (LocalCluster, 2 workers) against the in-memory fit.

Same data, same starting parameters, same run; BLAS pinned to one thread in this process and in every
worker; median of several fits, each ``--iters`` EM iterations with ``tol=0``::

    python benchmarks/bench_distributed.py [--rows 400000] [--features 8] [--components 5]
        [--chunk-rows 50000] [--iters 5] [--repeats 3]

Rows reported (milliseconds per EM iteration):

* ``in-memory``: :meth:`OnlineGaussianMixture.fit` on the NumPy array (one process, one thread);
* ``dask cluster``: :class:`DaskGaussianMixture` on the same array persisted on a
  ``LocalCluster(n_workers=2, threads_per_worker=1)`` (127.0.0.1, closed at the end), i.e. the data
  already live on the workers, as for a cluster-resident data set;
* ``dask threads``: the same without a client (Dask's threaded scheduler, 2 threads);
* ``latency``: the cluster path on 2 chunks of 1000 rows: the fixed cost of one round trip
  (graph build, broadcast of the parameters, scheduling, gathering the statistics).

The overhead is ``dask - in-memory`` (ms) and the ratio ``dask / in-memory``; with 2 workers on 2 free
cores the ratio can fall below one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _data(n: int, d: int, k: int) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (k, d))
    X = centres[rng.integers(0, k, n)] + rng.normal(size=(n, d))
    inits = dict(weights_init=np.full(k, 1.0 / k), means_init=centres + 0.5,
                 precisions_init=np.tile(np.eye(d), (k, 1, 1)))
    return X, inits


def _per_iter_ms(fit, iters: int, repeats: int) -> tuple[float, object]:
    times, model = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        model = fit()
        times.append((time.perf_counter() - t) / iters * 1e3)
    return statistics.median(times), model


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--components", type=int, default=5)
    ap.add_argument("--chunk-rows", type=int, default=50_000)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    os.environ.update(ONE_THREAD)          # inherited by the worker processes too

    import dask.array as da
    from distributed import Client, LocalCluster

    from online_gmm import OnlineGaussianMixture
    from online_gmm.distributed import DaskGaussianMixture

    warnings.simplefilter("ignore")        # tol=0: "did not converge" on purpose
    X, inits = _data(args.rows, args.features, args.components)
    params = dict(n_components=args.components, covariance_type="full", tol=0.0,
                  max_iter=args.iters, **inits)
    print(f"{args.rows} rows x {args.features} features, K={args.components} full, chunks of "
          f"{args.chunk_rows} rows ({X.nbytes / 1e6:.0f} MB), {args.iters} EM iterations per fit, "
          f"median of {args.repeats}")

    with threadpool_limits(1):
        mem_ms, ref = _per_iter_ms(lambda: OnlineGaussianMixture(**params).fit(X), args.iters,
                                   args.repeats)
        Xd = da.from_array(X, chunks=(args.chunk_rows, -1))
        thr_ms, thr = _per_iter_ms(lambda: DaskGaussianMixture(**params).fit(Xd), args.iters,
                                   args.repeats)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, env=ONE_THREAD) as cluster, \
            Client(cluster, set_as_default=False) as client:
        blas = client.run(lambda: __import__("threadpoolctl").threadpool_info())
        n_blas = {max((lib["num_threads"] for lib in info), default=0) for info in blas.values()}
        Xc = client.persist(da.from_array(X, chunks=(args.chunk_rows, -1)))
        DaskGaussianMixture(**dict(params, max_iter=1)).fit(Xc, client=client)     # warm-up
        dask_ms, got = _per_iter_ms(lambda: DaskGaussianMixture(**params).fit(Xc, client=client),
                                    args.iters, args.repeats)
        tiny = client.persist(da.from_array(X[:2000], chunks=(1000, -1)))
        lat_ms, _ = _per_iter_ms(lambda: DaskGaussianMixture(**params).fit(tiny, client=client),
                                 args.iters, args.repeats)
    for name, model in (("cluster", got), ("threads", thr)):
        assert model.n_iter_ == ref.n_iter_
        np.testing.assert_allclose(model.means_, ref.means_, rtol=1e-8, err_msg=name)

    print(f"worker BLAS threads: {sorted(n_blas)}")
    print(f"{'path':<16}{'ms / iteration':>16}{'overhead ms':>14}{'ratio':>8}")
    print(f"{'in-memory':<16}{mem_ms:>16.1f}{'':>14}{1.0:>8.2f}")
    for name, ms in (("dask cluster", dask_ms), ("dask threads", thr_ms)):
        print(f"{name:<16}{ms:>16.1f}{ms - mem_ms:>+14.1f}{ms / mem_ms:>8.2f}")
    print(f"{'latency':<16}{lat_ms:>16.1f}   (cluster, 2 chunks of 1000 rows: fixed cost per iteration)")


if __name__ == "__main__":
    main()
