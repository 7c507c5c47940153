"""Core benchmark: batch EM, ``partial_fit`` throughput and one-pass quality against scikit-learn.

Everything is measured side by side in one run, BLAS pinned to one thread, medians of several runs::

    python benchmarks/bench_core.py                 # all three parts, full sizes (a few minutes)
    python benchmarks/bench_core.py --only a        # one part: a (EM iteration), b (partial_fit),
                                                    # c (quality), d (float32 vs float64 E-step),
                                                    # e (PyTorch tensors vs NumPy, per EM iteration)
    python benchmarks/bench_core.py --quick         # small smoke run (seconds; figures meaningless)

Data: ``A`` has N=1e6, K=8, D=16 and ``B`` N=1e5, K=16, D=50, drawn from a known random Gaussian
mixture with reasonably separated components (see :func:`random_gmm`); held-out data comes from the
same mixture.

(a) Seconds per full-batch EM iteration (E-step + M-step) for every covariance type. Both libraries
    start from the parameters their ``fit`` derives from the same ``weights_init / means_init /
    precisions_init`` (set up once, untimed), then a fixed number of iterations with ``tol=0`` is
    timed: scikit-learn's per-iteration ``_e_step`` + ``_m_step`` and our ``run_em`` (what ``fit``
    runs). The runs must reach the same lower bound (printed as ``agree``): both did the same work.
(b) ``partial_fit`` throughput (points/s) after the warm-up, per batch size, against scikit-learn's
    ``score_samples`` throughput on the same data (full covariances, data A shape): one call on all
    N points, as perf-baselines.md measures it. For information, ``sk_batched`` is score_samples
    called on batches of the same size as ``partial_fit``'s; from batch ~100 it is faster per point
    than the one call (no page faults from N-row temporaries), so ``ratio_b`` is the stricter
    comparison.
(c) Held-out mean log-likelihood of one pass of ``partial_fit`` (default settings, batches of 1000)
    minus that of scikit-learn's ``fit(n_init=3)``, and the time each took.
(d) Seconds per E-step pass on float32 against float64 input (the same values), per covariance type.
(e) Where PyTorch is installed: seconds per EM iteration on its tensors (float64 and float32), CPU
    (and CUDA where present), under scikit-learn's array API dispatch, where the E-step runs on the
    tensor's device, beside NumPy's.
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
# (e): scikit-learn's array API dispatch requires it, set before scipy is imported
os.environ.setdefault("SCIPY_ARRAY_API", "1")

from sklearn.mixture import GaussianMixture  # noqa: E402

from online_gmm import OnlineGaussianMixture  # noqa: E402

#: data sets: name -> (n_train, n_components, n_features, n_test)
SIZES = {"A": (1_000_000, 8, 16, 200_000), "B": (100_000, 16, 50, 100_000)}
QUICK_SIZES = {"A": (20_000, 4, 8, 5_000), "B": (6_000, 4, 10, 3_000)}

COV_TYPES = ("full", "tied", "diag", "spherical")
#: (a) our time / scikit-learn's time must be at most this
EM_TARGETS = {"full": 0.25, "tied": 0.25, "diag": 0.5, "spherical": 0.5}
#: (b) partial_fit throughput / score_samples throughput at this batch size must be at least
THROUGHPUT_BATCH, THROUGHPUT_TARGET = 1000, 2.0
#: (c) allowed quality gap (nats per point) and time ratio
QUALITY_GAP = {"A": 0.01, "B": 0.05}
QUALITY_TIME_RATIO = 0.2


# ------------------------------------------------------------------------------------------ data
class TrueGMM:
    """A known full-covariance Gaussian mixture to draw data from."""

    def __init__(self, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> None:
        self.weights, self.means, self.covariances = weights, means, covariances
        self.chol = np.linalg.cholesky(covariances)

    def sample(self, n: int, rng: np.random.RandomState) -> np.ndarray:
        k_comp, d = self.means.shape
        labels = rng.choice(k_comp, size=n, p=self.weights)
        X = rng.standard_normal((n, d))
        for k in range(k_comp):
            idx = np.flatnonzero(labels == k)
            X[idx] = X[idx] @ self.chol[k].T + self.means[k]
        return X

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Exact log-density of the generating mixture (the reference every fit is compared to)."""
        gm = GaussianMixture(len(self.weights), covariance_type="full")
        gm.weights_, gm.means_, gm.covariances_ = self.weights, self.means, self.covariances
        gm.precisions_cholesky_ = np.linalg.inv(self.chol).transpose(0, 2, 1)
        return gm.score_samples(X)


def random_gmm(k_comp: int, d: int, rng: np.random.RandomState, separation: float = 6.0) -> TrueGMM:
    """Random mixture: weights ~ Dirichlet(5), means ~ N(0, (separation^2 / d) I) (so two means are
    about ``separation * sqrt(2)`` apart whatever ``d``), covariances Q diag(U[0.5, 2]) Q^T with a random
    rotation Q."""
    weights = rng.dirichlet(np.full(k_comp, 5.0))
    means = rng.normal(scale=separation / np.sqrt(d), size=(k_comp, d))
    covs = np.empty((k_comp, d, d))
    for k in range(k_comp):
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        covs[k] = (q * rng.uniform(0.5, 2.0, d)) @ q.T
    return TrueGMM(weights, means, covs)


def make_problem(name: str, seed: int = 0, quick: bool = False):
    """(true mixture, training data, held-out data) for data set ``name``."""
    n, k_comp, d, n_test = (QUICK_SIZES if quick else SIZES)[name]
    rng = np.random.RandomState(seed)
    gmm = random_gmm(k_comp, d, rng)
    return gmm, gmm.sample(n, rng), gmm.sample(n_test, rng)


def starting_params(gmm: TrueGMM, covariance_type: str, rng: np.random.RandomState) -> dict:
    """Same starting point for both libraries: perturbed true means, widened covariances."""
    k_comp, d = gmm.means.shape
    means = gmm.means + 0.5 * rng.standard_normal(gmm.means.shape) / np.sqrt(d)
    cov = 1.5 * gmm.covariances
    prec = {
        "full": lambda: np.linalg.inv(cov),
        "tied": lambda: np.linalg.inv(cov.mean(axis=0)),
        "diag": lambda: 1.0 / np.diagonal(cov, axis1=1, axis2=2),
        "spherical": lambda: 1.0 / np.diagonal(cov, axis1=1, axis2=2).mean(axis=1),
    }[covariance_type]()
    if covariance_type in ("full", "tied"):
        prec = 0.5 * (prec + np.swapaxes(prec, -1, -2))
    return {"weights_init": np.full(k_comp, 1.0 / k_comp), "means_init": means, "precisions_init": prec}


# ------------------------------------------------------------------------------------------ helpers
def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# ------------------------------------------------------------------------------------------ (a)
_SK_PARAMS = ("weights_", "means_", "precisions_cholesky_")


def bench_em(problems: dict, repeats: int, n_iter: int) -> list[dict]:
    """Seconds per EM iteration, ours and scikit-learn's, per data set and covariance type.

    Both start from the parameters their ``fit`` builds from the same ``weights_init / means_init /
    precisions_init`` (built once, untimed: initialisation is not part of an iteration). Then
    ``n_iter`` iterations are timed: scikit-learn's own loop body (``_e_step`` + ``_m_step``, what
    ``fit`` runs per iteration) and our ``run_em(tol=0, max_iter=n_iter)`` (what ``fit`` runs).
    The final lower bounds must agree (column ``agree``): both did the same work.
    """
    from sklearn.utils import check_random_state

    from online_gmm._em import run_em
    from online_gmm._init import initial_params

    print(f"\n(a) seconds per full-batch EM iteration (E+M), median of {repeats} runs of {n_iter} "
          f"iterations from the same given starting parameters")
    print(f"{'row':<4} {'data':<5} {'cov':<10} {'ours_s':>9} {'sklearn_s':>10} {'ratio':>7} "
          f"{'target':>7} {'agree':>9} {'result':>6}")
    rows = []
    for name, (gmm, X, _) in problems.items():
        k_comp = gmm.means.shape[0]
        for ct in COV_TYPES:
            init = starting_params(gmm, ct, np.random.RandomState(1))
            sk = GaussianMixture(k_comp, covariance_type=ct, tol=0.0, init_params="random_from_data",
                                 **init)
            sk._initialize_parameters(X, check_random_state(0))
            sk_start = [np.copy(getattr(sk, a)) for a in _SK_PARAMS]
            ours_start = initial_params(X, n_components=k_comp, covariance_type=ct,
                                        method="random_from_data", reg_covar=sk.reg_covar,
                                        rng=np.random.RandomState(0), **init)

            def run_sklearn():
                for attr, value in zip(_SK_PARAMS, sk_start):
                    setattr(sk, attr, value.copy())
                for _ in range(n_iter):
                    log_prob_norm, log_resp = sk._e_step(X)
                    sk._m_step(X, log_resp)
                return log_prob_norm

            def run_ours():
                return run_em(X, ours_start, reg_covar=sk.reg_covar, tol=0.0, max_iter=n_iter)

            t_sk, t_ours = [], []
            for _ in range(repeats):
                # alternate the libraries so that machine noise hits both alike
                t, lb_sk = _timed(run_sklearn)
                t_sk.append(t / n_iter)
                t, res = _timed(run_ours)
                t_ours.append(t / n_iter)
            per = {"ours": statistics.median(t_ours), "sk": statistics.median(t_sk)}
            agree = abs(lb_sk - res.lower_bound) / max(abs(lb_sk), 1e-300)
            ratio = per["ours"] / per["sk"]
            ok = ratio <= EM_TARGETS[ct] and agree < 1e-6 and res.n_iter == n_iter
            print(f"{'EM':<4} {name:<5} {ct:<10} {per['ours']:9.4f} {per['sk']:10.4f} {ratio:7.3f} "
                  f"{'<=' + str(EM_TARGETS[ct]):>7} {agree:9.1e} {_verdict(ok):>6}", flush=True)
            rows.append(dict(data=name, cov=ct, ours=per["ours"], sklearn=per["sk"], ratio=ratio,
                             agree=agree, ok=ok))
    return rows


# ------------------------------------------------------------------------------------------ (b)
def bench_throughput(problem, repeats: int, batches=(1, 100, 1000, 10000), points=None) -> list[dict]:
    """partial_fit points/s per batch size against scikit-learn's score_samples points/s."""
    gmm, X, _ = problem
    k_comp = gmm.means.shape[0]
    n = X.shape[0]
    points = points or {1: 3000, 100: 100_000, 1000: 500_000, 10000: 1_000_000}
    print(f"\n(b) partial_fit throughput (points/s) after warm-up, full, N={n}, K={k_comp}, "
          f"D={X.shape[1]}, median of {repeats}, vs scikit-learn score_samples on the same data")
    sk = GaussianMixture(k_comp, covariance_type="full", random_state=0, max_iter=5).fit(X[:20_000])
    sk_times = [_timed(lambda: sk.score_samples(X))[0] for _ in range(repeats)]
    sk_rate = n / statistics.median(sk_times)
    print(f"{'row':<4} {'batch':>6} {'ours_pts/s':>12} {'sklearn_pts/s':>14} {'ratio':>7} {'target':>7} "
          f"{'result':>6} {'sk_batched':>11} {'ratio_b':>8}")
    rows = []
    for b in batches:
        # informational: scikit-learn's score_samples called on batches of the same size. It avoids
        # the page faults of one call's large temporaries and is faster per point from batch ~100
        # (the target compares against the one call on the data, as perf-baselines.md defines it)
        sk_count = max(1, points[b] // b // (10 if b == 1 else 1))
        sk_b = [sk_count * b / _timed(lambda: [sk.score_samples(X[a * b:(a + 1) * b])
                                               for a in range(sk_count)])[0]
                for _ in range(repeats)]
        sk_b_rate = statistics.median(sk_b)
        model = OnlineGaussianMixture(k_comp, random_state=0)
        warm = model._warm_up_size(X.shape[1]) if model.warm_up == "auto" else model.warm_up
        model.partial_fit(X[:warm])                          # the model's own warm-up (batch EM)
        span = n - warm - b                                   # batches cycle through X[warm:]

        def feed(count, pos):
            for _ in range(count):
                a = warm + pos % span
                model.partial_fit(X[a:a + b])
                pos += b
            return pos

        pos = feed(min(20, max(3, 3000 // b)), 0)             # warm caches and buffers
        count = max(1, points[b] // b)
        rates = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            pos = feed(count, pos)
            rates.append(count * b / (time.perf_counter() - t0))
        rate = statistics.median(rates)
        ratio = rate / sk_rate
        target = f">={THROUGHPUT_TARGET:g}" if b == THROUGHPUT_BATCH else "-"
        result = _verdict(ratio >= THROUGHPUT_TARGET) if b == THROUGHPUT_BATCH else "-"
        print(f"{'PF':<4} {b:>6} {rate:12.4g} {sk_rate:14.4g} {ratio:7.3f} {target:>7} {result:>6} "
              f"{sk_b_rate:11.4g} {rate / sk_b_rate:8.3f}", flush=True)
        rows.append(dict(batch=b, ours=rate, sklearn=sk_rate, ratio=ratio, sklearn_batched=sk_b_rate,
                         ok=(ratio >= THROUGHPUT_TARGET) if b == THROUGHPUT_BATCH else None))
    return rows


# ------------------------------------------------------------------------------------------ (c)
def sklearn_reference(problem, n_init: int = 3, random_state: int = 0) -> dict:
    """scikit-learn's fit(n_init) on the training data: time and held-out mean log-likelihood."""
    gmm, X, X_test = problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t, sk = _timed(lambda: GaussianMixture(gmm.means.shape[0], n_init=n_init,
                                               random_state=random_state).fit(X))
    true = float(gmm.score_samples(X_test).mean())
    return {"time": t, "score": float(sk.score(X_test)), "true": true}


def one_pass(problem, batch: int = 1000, random_state: int = 0, **params) -> dict:
    """One pass of partial_fit over the training data: time and held-out mean log-likelihood."""
    gmm, X, X_test = problem
    model = OnlineGaussianMixture(gmm.means.shape[0], random_state=random_state, **params)

    def run():
        for a in range(0, X.shape[0], batch):
            model.partial_fit(X[a:a + batch])
        return model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t, _ = _timed(run)
    return {"time": t, "score": float(model.score(X_test)), "reseeds": len(model.reseeds_)}


def bench_quality(problems: dict, seeds=(0,), quick: bool = False) -> list[dict]:
    print("\n(c) one pass of partial_fit (defaults, batch 1000) vs scikit-learn fit(n_init=3): held-out "
          "mean log-likelihood (nats/point; *_true = minus the generating mixture's)")
    print(f"{'row':<4} {'data':<5} {'seed':>4} {'ours_true':>10} {'sk_true':>9} {'gap':>8} {'target':>7} "
          f"{'ours_s':>8} {'sk_s':>8} {'t_ratio':>8} {'target':>7} {'result':>6}")
    rows = []
    for name in problems:
        for seed in seeds:
            problem = problems[name] if seed == 0 else make_problem(name, seed, quick)
            ref = sklearn_reference(problem)
            ours = one_pass(problem)
            gap = ours["score"] - ref["score"]
            t_ratio = ours["time"] / ref["time"]
            ok = gap >= -QUALITY_GAP[name] and t_ratio <= QUALITY_TIME_RATIO
            print(f"{'Q':<4} {name:<5} {seed:>4} {ours['score'] - ref['true']:10.4f} "
                  f"{ref['score'] - ref['true']:9.4f} {gap:8.4f} {'>=-' + str(QUALITY_GAP[name]):>7} "
                  f"{ours['time']:8.2f} {ref['time']:8.2f} {t_ratio:8.3f} "
                  f"{'<=' + str(QUALITY_TIME_RATIO):>7} {_verdict(ok):>6}", flush=True)
            rows.append(dict(data=name, seed=seed, gap=gap, ours_time=ours["time"],
                             sk_time=ref["time"], t_ratio=t_ratio, ok=ok))
    return rows


# ------------------------------------------------------------------------------------------ (d)
def bench_dtype(problems: dict, repeats: int) -> list[dict]:
    """Seconds per E-step pass (``Scorer.expected_statistics``: responsibilities and statistics)
    on the same values as float64 and as float32, per data set and covariance type.

    float32 data are read chunk by chunk into the kernels' float64 buffers (the statistics are
    accumulated in float64): what float32 can buy is the halved memory the pass streams through.
    """
    from online_gmm._em import Scorer

    print("\n(d) E-step pass on float32 vs float64 input (same values; statistics in float64), "
          f"medians of {repeats} alternating pairs")
    print(f"{'row':<4} {'data':<5} {'type':<10} {'f64_s':>8} {'f32_s':>8} {'f32/f64':>8}")
    rows = []
    for name, (gmm, X, _) in problems.items():
        X32 = X.astype(np.float32)
        X64 = X32.astype(np.float64)
        for ctype in COV_TYPES:
            params = OnlineGaussianMixture(gmm.means.shape[0], covariance_type=ctype, max_iter=1,
                                           init_params="random_from_data",
                                           random_state=0).fit(X64[:20_000])._params_
            scorer = Scorer(params)
            scorer.expected_statistics(X64[:50_000])                        # buffers, caches
            # the two inputs alternate, and the ratio is the median of the pairs' ratios: a
            # loaded machine's slow spells fall on both sides of a pair
            pairs = [(_timed(lambda: scorer.expected_statistics(X64))[0],
                      _timed(lambda: scorer.expected_statistics(X32))[0]) for _ in range(repeats)]
            times = {"f64": statistics.median(p[0] for p in pairs),
                     "f32": statistics.median(p[1] for p in pairs)}
            ratio = statistics.median(b / a for a, b in pairs)
            print(f"{'DT':<4} {name:<5} {ctype:<10} {times['f64']:8.3f} {times['f32']:8.3f} {ratio:8.3f}",
                  flush=True)
            rows.append(dict(data=name, type=ctype, f64=times["f64"], f32=times["f32"], ratio=ratio))
    return rows


# ------------------------------------------------------------------------------------------ (e)
def bench_torch(problems: dict, repeats: int) -> list[dict]:
    """Seconds per EM iteration of ``fit`` on NumPy input and, under scikit-learn's array API
    dispatch, on PyTorch tensors on the CPU (and on CUDA where present), full covariances, float64
    and float32 tensors.

    An iteration's time is ``(t(max_iter=4) - t(max_iter=1)) / 3``: the start, made once per fit,
    cancels. Tensors stay on their device: the E-step runs there in PyTorch
    (:class:`online_gmm._xp_scorer.XpScorer`, in the tensor's dtype, statistics in float64) and
    only the K*D*D statistics cross to the host for the M-step; NumPy input runs the tuned host
    kernels (float64 arithmetic for either dtype). PyTorch is held to one thread on the CPU, as BLAS
    is for NumPy.
    """
    try:
        import torch
    except ImportError:
        print("\n(e) PyTorch is not installed: no EM iteration times on its tensors")
        return []
    import sklearn

    torch.set_num_threads(1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"\n(e) seconds per EM iteration (full), NumPy vs PyTorch tensors under array API "
          f"dispatch, E-step on the tensor's device ({', '.join(devices)}), median of {repeats}")
    print(f"{'row':<4} {'data':<5} {'input':<10} {'f64_it_s':>8} {'f32_it_s':>8} {'vs_numpy':>8}")

    def per_iter(X, dispatch: bool) -> float:
        def fit(n: int) -> float:
            model = OnlineGaussianMixture(k_comp, init_params="random_from_data", tol=0, max_iter=n,
                                          random_state=0)
            with sklearn.config_context(array_api_dispatch=dispatch):
                return _timed(lambda: model.fit(X))[0]
        return (fit(4) - fit(1)) / 3

    rows = []
    for name, (gmm, X, _) in problems.items():
        k_comp = gmm.means.shape[0]
        X32 = X.astype(np.float32)
        base = statistics.median(per_iter(X, False) for _ in range(repeats))
        base32 = statistics.median(per_iter(X32, False) for _ in range(repeats))
        print(f"{'TO':<4} {name:<5} {'numpy':<10} {base:8.3f} {base32:8.3f} {1.0:8.3f}", flush=True)
        rows.append(dict(data=name, input="numpy", iter=base, iter32=base32))
        for device in devices:
            X_t = torch.asarray(X, device=device)
            X_t32 = torch.asarray(X32, device=device)
            # NumPy and tensor runs alternate; the ratio (float64 tensors) is the median of the
            # pairs' ratios
            pairs = [(per_iter(X, False), per_iter(X_t, True)) for _ in range(repeats)]
            t = statistics.median(p[1] for p in pairs)
            t32 = statistics.median(per_iter(X_t32, True) for _ in range(repeats))
            ratio = statistics.median(b / a for a, b in pairs)
            print(f"{'TO':<4} {name:<5} {'torch:' + device:<10} {t:8.3f} {t32:8.3f} {ratio:8.3f}",
                  flush=True)
            rows.append(dict(data=name, input=f"torch:{device}", iter=t, iter32=t32, ratio=ratio))
    return rows


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (figures meaningless)")
    parser.add_argument("--only", action="append", choices=["a", "b", "c", "d", "e"],
                        help="run only this part (repeatable)")
    parser.add_argument("--data", action="append", choices=list(SIZES), help="data sets (default both)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per figure (default 3, quick 1)")
    parser.add_argument("--iters", type=int, default=3, help="(a) EM iterations per timed run")
    parser.add_argument("--seeds", type=int, default=1, help="(c) number of data seeds")
    args = parser.parse_args(argv)
    parts = args.only or ["a", "b", "c", "d", "e"]
    names = args.data or list(SIZES)
    repeats = args.repeats or (1 if args.quick else 3)

    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        print(f"bench_core: BLAS threads pinned to 1, {'QUICK ' if args.quick else ''}sizes "
              + ", ".join(f"{k}: N={v[0]}, K={v[1]}, D={v[2]}"
                          for k, v in (QUICK_SIZES if args.quick else SIZES).items() if k in names))
        problems = {name: make_problem(name, 0, args.quick) for name in names}
        results = {}
        if "a" in parts:
            results["a"] = bench_em(problems, repeats, args.iters)
        if "b" in parts:
            prob = problems["A"] if "A" in problems else make_problem("A", 0, args.quick)
            pts = ({1: 300, 100: 3000, 1000: 10_000, 10000: 10_000} if args.quick else None)
            results["b"] = bench_throughput(prob, repeats, points=pts)
        if "c" in parts:
            results["c"] = bench_quality(problems, seeds=tuple(range(args.seeds)), quick=args.quick)
        if "d" in parts:
            results["d"] = bench_dtype(problems, repeats)
        if "e" in parts:
            results["e"] = bench_torch(problems, repeats)
    misses = [r for rows in results.values() for r in rows if r.get("ok") is False]
    print(f"\nsummary: {len(misses)} target(s) missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
