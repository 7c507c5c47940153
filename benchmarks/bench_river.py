"""Throughput of the River learners on one dict stream (16 features, 8 clusters), side by side with
River's KMeans and HalfSpaceTrees, BLAS pinned to one thread.

Measured in steady state: each model first learns 5000 records (the GMM's warm-up fit happens
there and is reported separately), then ``repeats`` blocks of 5000 records are timed; the table gives
medians of records per second. Pairs: ``learn_one`` + ``predict_one`` (clusterers) and ``score_one``
+ ``learn_one`` (detectors, prequential order).

Run: ``python benchmarks/bench_river.py``
"""

from __future__ import annotations

import time

import numpy as np
from river import anomaly, cluster
from threadpoolctl import threadpool_limits

from online_gmm.river import GMMAnomalyDetector, OnlineGMM


def stream(n, k=8, d=16, seed=0):
    rng = np.random.RandomState(seed)
    centres = rng.normal(0, 3, (k, d))
    X = centres[rng.randint(k, size=n)] + rng.normal(size=(n, d))
    X = (X - X.min(axis=0)) / (X.max(axis=0) - X.min(axis=0))     # [0, 1]: what HST expects
    return [{f"x{j}": float(v) for j, v in enumerate(row)} for row in X]


def learn_predict(m, x):
    m.learn_one(x)
    m.predict_one(x)


def score_learn(m, x):
    m.score_one(x)
    m.learn_one(x)


def timed(model, step, records):
    t = time.perf_counter()
    for x in records:
        step(model, x)
    return time.perf_counter() - t


def main(block=5000, repeats=5) -> None:
    records = stream(block * (repeats + 1))
    models = [
        ("river KMeans(8)", lambda: cluster.KMeans(n_clusters=8, seed=0), learn_predict),
        ("OnlineGMM(8)", lambda: OnlineGMM(n_components=8, seed=0), learn_predict),
        ("river HalfSpaceTrees", lambda: anomaly.HalfSpaceTrees(seed=0), score_learn),
        ("GMMAnomalyDetector(8)", lambda: GMMAnomalyDetector(n_components=8, seed=0), score_learn),
    ]
    rates: dict[str, list[float]] = {name: [] for name, _, _ in models}
    first: dict[str, float] = {}
    with threadpool_limits(1):
        instances = {}
        for name, make, step in models:
            instances[name] = make()
            first[name] = timed(instances[name], step, records[:block])
        for r in range(repeats):                   # interleaved, so load drifts hit all models
            part = records[block * (r + 1): block * (r + 2)]
            for name, _, step in models:
                rates[name].append(len(part) / timed(instances[name], step, part))
    med = {name: float(np.median(v)) for name, v in rates.items()}
    print(f"{'model':24s} {'pair':22s} {'first 5000 (s)':>14s} {'records/s':>10s} {'ratio':>7s}")
    pairs = {"river KMeans(8)": "learn_one+predict_one", "OnlineGMM(8)": "learn_one+predict_one",
             "river HalfSpaceTrees": "score_one+learn_one", "GMMAnomalyDetector(8)": "score_one+learn_one"}
    base = {"OnlineGMM(8)": "river KMeans(8)", "GMMAnomalyDetector(8)": "river HalfSpaceTrees"}
    for name in med:
        ratio = f"{med[name] / med[base[name]]:.2f}x" if name in base else ""
        print(f"{name:24s} {pairs[name]:22s} {first[name]:14.2f} {med[name]:10.0f} {ratio:>7s}")


if __name__ == "__main__":
    main()
