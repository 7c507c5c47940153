"""Records per second of CSVSource / JSONLinesSource against plain numpy.loadtxt / json.loads loops.

Same file, same run, BLAS pinned to one thread, median of several runs::

    python benchmarks/bench_files.py [--rows 200000] [--features 8] [--repeats 5]

The baselines build the same float64 array (and nothing else: no meta, no positions, no validation).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from connectors import CSVSource, JSONLinesSource  # noqa: E402


def _write_files(directory: str, n: int, d: int) -> tuple[str, str, list[str]]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d)).round(6)
    names = [f"f{j}" for j in range(d)]
    csv_path = os.path.join(directory, "data.csv")
    with open(csv_path, "w") as fh:
        fh.write(",".join(names) + "\n")
        fh.writelines(",".join(map(repr, row)) + "\n" for row in X.tolist())
    jsonl_path = os.path.join(directory, "data.jsonl")
    with open(jsonl_path, "w") as fh:
        for i, row in enumerate(X.tolist()):
            fh.write(json.dumps({"id": i, **dict(zip(names, row)), "tag": "sensor-a"}) + "\n")
    return csv_path, jsonl_path, names


def _median_time(fn, repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--features", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=10_000, help="max_records per read()")
    p.add_argument("--no-pyarrow", action="store_true", help="CSV batches through numpy.loadtxt, not pyarrow")
    args = p.parse_args(argv)
    if args.no_pyarrow:
        from connectors import csv_decoder

        csv_decoder._ARROW[:] = [None]
    n, d = args.rows, args.features

    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1):
        csv_path, jsonl_path, names = _write_files(tmp, n, d)

        def loadtxt():
            return np.loadtxt(csv_path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)

        def csv_source():
            src = CSVSource(csv_path, columns=names)
            parts = [b.X for b in _iter(src, args.batch)]
            return np.concatenate(parts)

        def json_loop():
            rows = []
            with open(jsonl_path, "rb") as fh:
                for line in fh:
                    obj = json.loads(line)
                    rows.append([obj[k] for k in names])
            return np.array(rows, dtype=np.float64)

        def jsonl_source():
            src = JSONLinesSource(jsonl_path, fields=names)
            parts = [b.X for b in _iter(src, args.batch)]
            return np.concatenate(parts)

        results = []
        for label, base_label, base, ours in (
            ("CSV", "numpy.loadtxt", loadtxt, csv_source),
            ("JSON Lines", "json.loads loop", json_loop, jsonl_source),
        ):
            t_base, X_base = _median_time(base, args.repeats)
            t_ours, X_ours = _median_time(ours, args.repeats)
            np.testing.assert_array_equal(X_base, X_ours)
            results.append((label, base_label, n / t_base, n / t_ours, t_base / t_ours))

    print(f"{n} records x {d} features, median of {args.repeats} runs, BLAS 1 thread, "
          f"max_records={args.batch}, CSV batch parser: {'numpy.loadtxt' if args.no_pyarrow else 'pyarrow'}")
    print(f"{'format':<11} {'baseline':<16} {'baseline rec/s':>15} {'source rec/s':>13} {'ratio':>6}")
    for label, base_label, r_base, r_ours, ratio in results:
        print(f"{label:<11} {base_label:<16} {r_base:>15,.0f} {r_ours:>13,.0f} {ratio:>6.2f}")


def _iter(src, batch):
    while True:
        b = src.read(batch, timeout=0)
        if b.n_records:
            yield b
        if b.status == "end":
            src.close()
            return


if __name__ == "__main__":
    main()
