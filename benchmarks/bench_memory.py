"""Pipeline memory stays flat: peak RSS after 1e5 records vs after 1e6 records, in one process.

A synthetic source produces a drifting 8-feature stream on the fly (no file to hold), and the full
pipeline runs on it: scoring, learning, anomaly threshold, refits on the reservoir, checkpoints and a
JSON Lines scores sink. Target: peak RSS grows by less than 10% between the two marks.

    python benchmarks/bench_memory.py [--records 1000000] [--first 100000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from connectors.base import Batch, Source
from connectors.files import JSONLinesSink
from online_gmm import OnlineGaussianMixture
from online_gmm.anomaly import NLLThreshold
from online_gmm.pipeline import Pipeline


class SyntheticSource(Source):
    """A stream of ``n`` 8-d rows from a slowly moving 4-component mixture, generated on the fly."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.pos = n, seed, 0
        self.centres = np.random.default_rng(seed).normal(0, 6, size=(4, 8))

    def read(self, max_records, timeout=None):
        k = min(max_records, self.n - self.pos)
        if k <= 0:
            return Batch(np.empty((0, 8)), [], [], self.pos, "end")
        rng = np.random.default_rng([self.seed, self.pos])
        labels = rng.integers(4, size=k)
        drift = (self.pos / max(self.n, 1)) * 2.0
        X = self.centres[labels] + drift + rng.standard_normal((k, 8))
        meta = [{"source": "synthetic", "offset": self.pos + i} for i in range(k)]
        self.pos += k
        return Batch(X, meta, [], self.pos, "records")

    def position(self):
        return self.pos

    def seek(self, position):
        self.pos = int(position)

    def close(self):
        pass


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--first", type=int, default=100_000)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1):
        pipe = Pipeline(SyntheticSource(args.records),
                        OnlineGaussianMixture(4, halflife=50_000, random_state=0),
                        batch_size=1000, scores=JSONLinesSink(str(Path(tmp) / "scores.jsonl")),
                        anomaly=NLLThreshold(q=0.99), refit_every=100_000, refit_candidates=[3, 4, 5],
                        reservoir_size=5000, refit_n_init=1, checkpoint_dir=str(Path(tmp) / "ck"),
                        checkpoint_every=50_000, include_features=False)
        t0 = time.perf_counter()
        pipe.run(max_records=args.first)
        first = peak_rss_mb()
        t1 = time.perf_counter()
        pipe.run(max_records=args.records)
        last = peak_rss_mb()
        t2 = time.perf_counter()
        pipe.close()
    growth = last / first - 1.0
    print(f"{'records':>10} {'peak RSS MB':>12} {'seconds':>8}")
    print(f"{args.first:>10} {first:>12.1f} {t1 - t0:>8.1f}")
    print(f"{args.records:>10} {last:>12.1f} {t2 - t1:>8.1f}")
    print(f"peak RSS growth {100 * growth:+.1f}% (target < +10%): {'PASS' if growth < 0.10 else 'MISS'}; "
          f"{pipe.summary.refits} refits, {pipe.summary.checkpoints} checkpoints, "
          f"{(args.records - args.first) / (t2 - t1):,.0f} records/s")
    return {"first": first, "last": last, "growth": growth}


if __name__ == "__main__":
    sys.exit(0 if main()["growth"] < 0.10 else 1)
