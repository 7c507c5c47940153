"""Grid over the online settings: one pass of ``partial_fit`` against scikit-learn's ``fit(n_init=3)``.

The experiment is part (c) of ``bench_core.py`` (same data sets, same held-out scoring), repeated over
``alpha``, ``t0``, ``step_unit`` and the warm-up size (a multiple of the 'auto' size
``max(1000, 20 * K * D)``) and over several data seeds, BLAS pinned to one thread::

    python benchmarks/tune_online_defaults.py                        # the default grid, seeds 0-2
    python benchmarks/tune_online_defaults.py --alpha 0.8 1.0 --warm 1 2 --seeds 0 1
    python benchmarks/tune_online_defaults.py --quick                 # small smoke run

For every setting it prints, per data set, the median and worst gap (ours minus scikit-learn's held-out
mean log-likelihood, nats/point) over the seeds and the median time ratio, then whether the setting meets
the targets of ``bench_core.py`` (gap >= -0.01 on A and -0.05 on B, time <= 1/5 of scikit-learn's) on
every seed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import warnings

from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_core as bc  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alpha", type=float, nargs="+", default=[0.6, 0.7, 0.8, 0.9, 1.0])
    parser.add_argument("--t0", type=float, nargs="+", default=[2.0])
    parser.add_argument("--step-unit", type=float, nargs="+", default=[1000.0])
    parser.add_argument("--warm", type=float, nargs="+", default=[1.0, 2.0],
                        help="warm-up size as a multiple of max(1000, 20*K*D)")
    parser.add_argument("--warm-n-init", type=int, nargs="+", default=[3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", nargs="+", default=list(bc.SIZES), choices=list(bc.SIZES))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cache", default=None,
                        help="JSON file keeping scikit-learn's reference fits between runs")
    args = parser.parse_args(argv)

    grid = list(itertools.product(args.alpha, args.t0, args.step_unit, args.warm, args.warm_n_init))
    results: dict = {}
    cache = {}
    if args.cache and os.path.exists(args.cache):
        with open(args.cache) as fh:
            cache = json.load(fh)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in args.data:
            for seed in args.seeds:
                problem = bc.make_problem(name, seed, args.quick)
                gmm = problem[0]
                k_comp, d = gmm.means.shape
                key = f"{name}/{seed}/{'quick' if args.quick else 'full'}"
                ref = cache.get(key) or bc.sklearn_reference(problem)
                if args.cache:
                    cache[key] = ref
                    with open(args.cache, "w") as fh:
                        json.dump(cache, fh)
                print(f"# {name} seed {seed}: sklearn n_init=3 {ref['time']:.1f} s, held-out gap to the "
                      f"true mixture {ref['score'] - ref['true']:.4f}", flush=True)
                for alpha, t0, unit, warm, wn in grid:
                    warm_up = int(warm * max(1000, 20 * k_comp * d))
                    ours = bc.one_pass(problem, alpha=alpha, t0=t0, step_unit=unit, warm_up=warm_up,
                                       warm_up_n_init=wn)
                    results.setdefault((alpha, t0, unit, warm, wn), {}).setdefault(name, []).append(
                        (ours["score"] - ref["score"], ours["time"] / ref["time"]))
                    print(f"#   alpha={alpha} t0={t0} unit={unit:g} warm={warm:g}x n_init={wn}: gap "
                          f"{ours['score'] - ref['score']:.4f}, {ours['time']:.2f} s", flush=True)

    head = f"{'alpha':>5} {'t0':>4} {'unit':>6} {'warm':>5} {'n_init':>6}"
    for name in args.data:
        head += f" | {name + ' gap med':>10} {'worst':>8} {'t_ratio':>7}"
    print("\n" + head + " | meets")
    for key in grid:
        alpha, t0, unit, warm, wn = key
        line = f"{alpha:5.2f} {t0:4g} {unit:6g} {warm:4g}x {wn:6d}"
        ok = True
        for name in args.data:
            rows = results[key][name]
            gaps = [g for g, _ in rows]
            ratios = [r for _, r in rows]
            ok &= min(gaps) >= -bc.QUALITY_GAP[name] and max(ratios) <= bc.QUALITY_TIME_RATIO
            line += f" | {statistics.median(gaps):10.4f} {min(gaps):8.4f} {statistics.median(ratios):7.3f}"
        print(line + f" | {'yes' if ok else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
