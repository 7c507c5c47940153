"""The pipeline end to end against the speed of its parts, measured side by side in one run.

Generates ``--records`` events (8 numeric fields from a 4-component mixture, an id and a timestamp
carried into every score record) as JSON Lines, CSV and Parquet, then runs the pipeline exactly as
``online-gmm run`` builds it (``online_gmm.cli.build_pipeline`` on a configuration): K=4 full
covariances, the default batch size, a 0.99 quantile anomaly threshold, checkpoints every 100 000
records, no refits (and once more with a refit every 50 000).  BLAS is pinned to one thread.

Anchors measured on the same data in the same run:

* the fastest bare decode loop to a float matrix among msgspec (typed, one call per line), orjson
  (one call per line) and ``pyarrow.json.read_json`` (whole file);
* ``partial_fit`` alone on the same arrays, in batches of the pipeline's size.

Targets (issue 13): JSONL -> JSONL >= 250 000 records/s and >= 0.4x the fastest bare decode loop;
CSV -> JSONL >= 250 000 records/s; Parquet -> Parquet sink >= 0.6x ``partial_fit`` alone.  The share
of the pipeline's time spent decoding (source reads, file I/O included), in the model (score and
learn), encoding and writing outputs (sinks' write calls), flushing them durably (Kafka delivery, a
Parquet part's close; the file sinks' fsync and the checkpoint file's write run on the checkpoint's
background thread, off this path, and count only as the wait for them at the end), refits,
checkpoints (taking and encoding the state) and the rest (batch assembly, counters, start-up and
close) is printed for each path.

    python benchmarks/bench_pipeline.py [--records 500000] [--repeats 3] [--paths jsonl,csv,parquet]
    python benchmarks/bench_pipeline.py --kafka      # also Kafka -> Kafka on a local broker

Kafka -> Kafka stops at the n-th record (``pipeline.max_records``), as the bare loops do. Like the
bare loops, the checked runs read the topic without a consumer group (no ``group_id``: the
checkpoint alone holds the offsets); a run with a group, whose figure also holds the group's join
(about 1 s on the test broker), is printed for the faster client.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from online_gmm import OnlineGaussianMixture  # noqa: E402
from online_gmm.cli import build_pipeline  # noqa: E402
from online_gmm.config import parse_config  # noqa: E402

FIELDS = [f"f{j}" for j in range(8)]
TARGET_JSONL, TARGET_CSV = 250_000, 250_000
RATIO_DECODE, RATIO_PARQUET, RATIO_KAFKA = 0.4, 0.6, 0.5


# ------------------------------------------------------------------------------------------ data
def make_data(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 8, size=(4, 8))
    comp = rng.integers(0, 4, size=n)
    X = centres[comp] + rng.normal(size=(n, 8)) * rng.uniform(0.5, 2.0, size=(4, 8))[comp]
    return np.round(X, 4)


def write_files(X: np.ndarray, folder: Path) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = X.shape[0]
    ids = np.arange(n)
    ts = [f"2026-12-04T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}" for i in range(n)]
    paths = {"jsonl": folder / "events.jsonl", "csv": folder / "events.csv",
             "parquet": folder / "events.parquet"}
    with open(paths["jsonl"], "w") as fh:
        for i, row in enumerate(X.tolist()):
            fh.write(json.dumps({"id": i, "ts": ts[i], "metrics": dict(zip(FIELDS, row))}) + "\n")
    with open(paths["csv"], "w") as fh:
        fh.write("id,ts," + ",".join(FIELDS) + "\n")
        for i, row in enumerate(X.tolist()):
            fh.write(f"{i},{ts[i]}," + ",".join(map(repr, row)) + "\n")
    table = pa.table({"id": ids, "ts": ts, **{f: X[:, j] for j, f in enumerate(FIELDS)}})
    pq.write_table(table, paths["parquet"], row_group_size=100_000)
    return paths


# ------------------------------------------------------------------------------------------ anchors
def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bare_decoders(path: Path, n: int, repeats: int) -> dict[str, float]:
    """Records per second of bare decode loops, file to float matrix."""
    import msgspec
    import orjson
    import pyarrow.json as pj

    Metrics = msgspec.defstruct("Metrics", [(f, float) for f in FIELDS])
    Event = msgspec.defstruct("Event", [("metrics", Metrics)])
    dec = msgspec.json.Decoder(Event)

    def run_msgspec():
        with open(path, "rb") as fh:
            rows = [msgspec.structs.astuple(dec.decode(line).metrics) for line in fh]
        return np.array(rows)

    def run_orjson():
        with open(path, "rb") as fh:
            rows = [[o["metrics"][f] for f in FIELDS] for o in map(orjson.loads, fh)]
        return np.array(rows)

    def run_arrow():
        table = pj.read_json(path, read_options=pj.ReadOptions(use_threads=False))
        m = table.column("metrics").combine_chunks()
        return np.column_stack([m.field(f).to_numpy() for f in FIELDS])

    out = {}
    for name, fn in (("msgspec", run_msgspec), ("orjson", run_orjson), ("pyarrow.json", run_arrow)):
        assert fn().shape == (n, 8)
        out[name] = n / best_of(fn, repeats)
    return out


def partial_fit_alone(X: np.ndarray, batch: int, repeats: int) -> float:
    def run():
        m = OnlineGaussianMixture(n_components=4, covariance_type="full", random_state=0)
        for s in range(0, X.shape[0], batch):
            m.partial_fit(X[s: s + batch])
    return X.shape[0] / best_of(run, repeats)


# ------------------------------------------------------------------------------------------ pipeline
def config(kind: str, path: Path, out: Path, *, refit_every: int, sink: str,
           batch_size: int | None = None) -> dict:
    source = {"type": kind, "path": str(path), "carry": ["id", "ts"]}
    if kind == "jsonl":
        source["fields"] = [f"metrics.{f}" for f in FIELDS]
    else:
        source["columns"] = list(FIELDS)
    sinks = {"scores": {"type": "jsonl", "path": str(out / "scores.jsonl")}} if sink == "jsonl" else \
        {"scores": {"type": "parquet", "path": str(out / "scores.parquet")}}
    raw = {
        "source": source,
        "model": {"n_components": 4, "covariance_type": "full", "random_state": 0},
        "anomaly": {"quantile": 0.99},
        "refit": {"every": refit_every, "candidates": [3, 4, 5]},
        "checkpoint": {"directory": str(out / "state"), "every": 100_000},
        "sinks": sinks,
        "pipeline": {"features": False, **({"batch_size": batch_size} if batch_size else {})},
    }
    return parse_config(raw)


class Timers:
    """Wall time spent in the source's reads, the model, and the sinks' writes and flushes."""

    def __init__(self) -> None:
        self.t: dict[str, float] = defaultdict(float)
        self._depth: dict[str, int] = defaultdict(int)

    def wrap(self, obj, name: str, bucket: str) -> None:
        fn = getattr(obj, name)

        def timed(*a, **k):
            # a wrapped call inside another of its bucket (score_learn's two-pass fallback calls
            # score_then_learn) is counted once, by the outer call
            self._depth[bucket] += 1
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self._depth[bucket] -= 1
                if self._depth[bucket] == 0:
                    self.t[bucket] += time.perf_counter() - t
        setattr(obj, name, timed)


def run_pipeline(cfg: dict, n: int, *, timed: bool = False) -> tuple[float, dict[str, float]]:
    out = Path(cfg["checkpoint"]["directory"]).parent
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    gc.collect()
    t0 = time.perf_counter()
    pipe = build_pipeline(cfg)
    timers = Timers()
    if timed:
        timers.wrap(pipe.source, "read", "decode")
        for sink in pipe.sinks.values():
            if sink is not None:
                for meth in ("write_columns", "write"):
                    if hasattr(sink, meth):
                        timers.wrap(sink, meth, "encode+write")
                # the pipeline flushes through flush_async (which calls flush where it is synchronous)
                timers.wrap(sink, "flush_async", "flush")
        orig = pipe._ensure_online

        def ensure(d):
            orig(d)
            if not getattr(pipe._online, "_timed", False):
                timers.wrap(pipe._online, "score_then_learn", "model")
                timers.wrap(pipe._online, "score_learn", "model")
                pipe._online._timed = True
        pipe._ensure_online = ensure
        timers.wrap(pipe, "refit_now", "refits")
        timers.wrap(pipe, "checkpoint", "checkpoints")
    try:
        summary = pipe.run(max_records=cfg["pipeline"]["max_records"])
    finally:
        pipe.close()
    total = time.perf_counter() - t0
    assert summary.good == n, (summary.good, n)
    shares = {}
    if timed:
        inner = dict(timers.t)
        # sinks are flushed (fsync, or delivery for Kafka) inside checkpoint(): counted once, as I/O
        inner["checkpoints"] = inner.get("checkpoints", 0.0) - inner.get("flush", 0.0)
        shares = {k: v / total for k, v in inner.items()}
        shares["other"] = 1.0 - sum(shares.values())
    return n / total, shares


def fmt_shares(shares: dict[str, float]) -> str:
    order = ["decode", "model", "encode+write", "flush", "refits", "checkpoints", "other"]
    return "  ".join(f"{k} {shares.get(k, 0.0) * 100:4.1f}%" for k in order)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--paths", default="jsonl,csv,parquet")
    ap.add_argument("--kafka", action="store_true", help="also Kafka -> Kafka (local broker)")
    args = ap.parse_args()
    n = args.records
    paths_wanted = args.paths.split(",")
    ok = True
    with threadpool_limits(1), tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        X = make_data(n)
        files = write_files(X, tmp)
        batch = parse_config({"source": {"type": "jsonl", "path": "x", "fields": ["a"]}})["pipeline"]["batch_size"]
        print(f"{n} records, 8 features, K=4 full, batch {batch} (the default), quantile 0.99, "
              f"checkpoints every 100000, BLAS 1 thread; anchors: best of {args.repeats}, "
              f"pipeline runs: median of {args.repeats}")
        bare = bare_decoders(files["jsonl"], n, args.repeats)
        fastest = max(bare.values())
        pf = partial_fit_alone(X, batch, args.repeats)
        print("anchors (records/s): " + ", ".join(f"{k} {v:,.0f}" for k, v in bare.items())
              + f"; partial_fit alone {pf:,.0f}")
        rows = []
        for kind, sink in (("jsonl", "jsonl"), ("csv", "jsonl"), ("parquet", "parquet")):
            if kind not in paths_wanted:
                continue
            for refit_every in (0, 50_000):
                cfg = config(kind, files[kind], tmp / f"out-{kind}", refit_every=refit_every, sink=sink)
                rates = [run_pipeline(cfg, n)[0] for _ in range(args.repeats)]
                _, shares = run_pipeline(cfg, n, timed=True)
                rate = statistics.median(rates)
                rows.append((kind, sink, refit_every, rate, shares))
        print(f"{'path':<22}{'refits':>8}{'records/s':>12}  checks")
        for kind, sink, refit_every, rate, shares in rows:
            checks = []
            if kind == "jsonl":
                checks.append(_check(rate >= TARGET_JSONL, f">= {TARGET_JSONL:,}"))
                checks.append(_check(rate / fastest >= RATIO_DECODE,
                                     f"{rate / fastest:.2f}x fastest decode (>= {RATIO_DECODE})"))
            elif kind == "csv":
                checks.append(_check(rate >= TARGET_CSV, f">= {TARGET_CSV:,}"))
            else:
                checks.append(_check(rate / pf >= RATIO_PARQUET,
                                     f"{rate / pf:.2f}x partial_fit (>= {RATIO_PARQUET})"))
            ok &= all(c.startswith("PASS") for c in checks)
            label = f"{kind} -> {sink}"
            print(f"{label:<22}{refit_every or '-':>8}{rate:>12,.0f}  " + "; ".join(checks))
            print(f"{'':<22}{'':>8}{'':>12}  time: {fmt_shares(shares)}")
        if args.kafka:
            ok &= _kafka(tmp, X, n, args.repeats)
    print("ALL PASS" if ok else "SOME MISSED")
    return 0


def _check(passed: bool, what: str) -> str:
    return ("PASS " if passed else "MISS ") + what


def _kafka(tmp: Path, X: np.ndarray, n: int, repeats: int) -> bool:
    """Kafka (1 partition, local broker) -> Kafka sink with each client, against the bare loops."""
    import msgspec
    from bench_kafka import bare_consume, bare_consume_decode, bare_produce, create_topic

    from connectors.broker import LocalBroker

    encode = msgspec.json.Encoder().encode
    values = [encode({"id": i, **dict(zip(FIELDS, row))}) for i, row in enumerate(X.tolist())]
    ok = True
    with LocalBroker() as broker:
        bs = broker.bootstrap_servers
        create_topic(bs, "events")
        bare_produce("confluent", bs, "events", values)
        bare = {c: max(bare_consume_decode(c, bs, "events", n) for _ in range(repeats))
                for c in ("kafka-python", "confluent")}
        raw = {c: max(bare_consume(c, bs, "events", n) for _ in range(repeats))
               for c in ("kafka-python", "confluent")}
        fastest = max(bare.values())
        print("kafka bare consume (msg/s): " + ", ".join(f"{k} {v:,.0f}" for k, v in raw.items())
              + "; with decoding to a float matrix (records/s): "
              + ", ".join(f"{k} {v:,.0f}" for k, v in bare.items()))
        # the bare loops read without a group; so does the pipeline in the first run of each client
        # (no group_id: the checkpoint alone holds the offsets). With a group, the figure also holds
        # the group's join (about 1 s on the test broker): shown for the faster client.
        for client, grouped in (("kafka-python", False), ("confluent", False), ("confluent", True)):
            rates, shares = [], {}
            for r in range(repeats + 1):
                tag = f"{client}-{'g' if grouped else 'n'}-{r}"
                sink_topic = f"scores-{tag}"
                create_topic(bs, sink_topic)
                source = {"type": "kafka", "topics": "events", "bootstrap_servers": bs, "client": client,
                          "max_idle_s": 1.0, "fields": list(FIELDS), "carry": ["id"]}
                if grouped:
                    # the test broker (Tansu) joins a group in about session_timeout / 2 (23 s at the
                    # clients' default 45 s): the tests' settings
                    source.update(group_id=f"bench-{tag}",
                                  settings={"session_timeout_ms": 2000, "heartbeat_interval_ms": 400})
                cfg = parse_config({
                    "source": source,
                    "model": {"n_components": 4, "covariance_type": "full", "random_state": 0},
                    "anomaly": {"quantile": 0.99},
                    "checkpoint": {"directory": str(tmp / f"k-{tag}" / "state"), "every": 100_000},
                    "sinks": {"scores": {"type": "kafka", "topic": sink_topic, "bootstrap_servers": bs,
                                         "client": client}},
                    # stop at the n-th record, as the bare loops do (``online-gmm run`` reads the same
                    # key); max_idle_s above is only a safety net, its idle second is not measured
                    "pipeline": {"features": False, "max_records": n},
                })
                rate, sh = run_pipeline(cfg, n, timed=(r == repeats))
                if r < repeats:
                    rates.append(rate)
                else:
                    shares = sh
            rate = statistics.median(rates)
            checks = [_check(rate / bare[client] >= RATIO_KAFKA,
                             f"{rate / bare[client]:.2f}x its own bare consume+decode (>= {RATIO_KAFKA})")]
            if bare[client] == fastest:
                checks.append(_check(rate / fastest >= RATIO_KAFKA,
                                     f"{rate / fastest:.2f}x the fastest bare loop (>= {RATIO_KAFKA})"))
            if not grouped:
                ok &= all(c.startswith("PASS") for c in checks)
            label = f"kafka -> kafka ({client}{', group' if grouped else ''})"
            print(f"{label:<30}{rate:>12,.0f}  " + "; ".join(checks))
            print(f"{'':<30}{'':>12}  time: {fmt_shares(shares)}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
