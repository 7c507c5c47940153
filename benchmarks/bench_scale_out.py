"""Scale-out throughput: the same Kafka topic through 1 and 2 Dask workers, and where the time goes.

Starts its own :class:`connectors.broker.LocalBroker` (Tansu on 127.0.0.1), creates one topic of
``--partitions`` partitions holding ``--records`` JSON events (8 float fields, 4 Gaussian clusters),
and runs the scaled-out pipeline (:class:`online_gmm.scale_out.ScaleOutPipeline`: K=4 full, scores
to per-partition JSON Lines files, anomaly quantile 0.99, a checkpoint every 50 000 records, no
refit) over the whole topic with a ``LocalCluster`` of 1 worker, then of 2 workers (one thread each,
BLAS pinned to one thread), in the same run. Cluster start-up is not timed.

It prints, for each worker count:

* records per second (median of ``--repeats``) after the first round (which holds the warm-up fit and
  the consumers' first fetches) and end to end, and the ratio 2 workers / 1 worker of the first
  (target >= 1.6x);
* per round: wall time, the busiest worker's time in its tasks (reading, scoring and writing its
  partitions' shares, one after another) and in its read-ahead (each worker reads and decodes its
  partitions' next round while the coordinator merges the last: ``[cluster] read_ahead``, on unless
  ``--no-read-ahead``), and the coordinator's share of the round (wall minus the busiest worker's
  tasks: scheduling, transfer of parameters and statistics, the merge and the stepwise update, the
  read-ahead overlapping it), of which the merge itself;

then projects the throughput of 16 and 64 workers (one partition each, ``round_size`` records per
partition per round) from the measured costs: a task's time per record stays constant, the
coordinator's fixed cost per round stays, and its cost per partition (submitting a task, receiving
and merging its statistics, sketch and sample) grows with N, so the projection is
``N * round_size / (t_task + c0 + c1 * N)``.

The machine this runs on has 2 cores for the broker, the scheduler, the coordinator and the workers
together: the ratio measured here is a floor for a cluster whose workers have their own cores.

Run::

    python benchmarks/bench_scale_out.py [--records 1920000] [--partitions 4] [--round-size 80000]
        [--repeats 3]

The defaults are the configuration the README reports (about 3.5 minutes): rounds of 80 000 records
per partition (about 1 s of a worker's time) amortise the coordinator's fixed cost per round (about
0.2 s here) enough for the 1.6x target on this machine; smaller rounds show the trade-off (round size
40 000 measured 1.46-1.81x, 5000 about 1.4x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")      # workers inherit it
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec  # noqa: E402
import numpy as np  # noqa: E402

from connectors.broker import LocalBroker  # noqa: E402

FIELDS = [f"f{i}" for i in range(8)]


def make_values(n: int, seed: int = 0) -> list[bytes]:
    """n JSON events of 8 float fields drawn from 4 Gaussian clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5.0, size=(4, len(FIELDS)))
    X = np.round(centres[rng.integers(0, 4, n)] + rng.normal(size=(n, len(FIELDS))), 6)
    encode = msgspec.json.Encoder().encode
    return [encode(dict(zip(FIELDS, row))) for row in X.tolist()]


def produce(bootstrap: str, topic: str, values: list[bytes], partitions: int) -> None:
    from confluent_kafka import Producer
    from kafka.admin import KafkaAdminClient, NewTopic
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    admin.close()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, v in enumerate(values):
        while True:
            try:
                producer.produce(topic, v, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(300) == 0


def job_config(bootstrap: str, topic: str, out: Path, round_size: int) -> dict:
    from online_gmm.config import parse_config
    return parse_config({
        "source": {"type": "kafka", "topics": topic, "bootstrap_servers": bootstrap, "fields": FIELDS,
                   "max_idle_s": 5.0},
        "model": {"n_components": 4, "covariance_type": "full", "random_state": 0},
        "anomaly": {"quantile": 0.99},
        "checkpoint": {"directory": str(out / "ck"), "every": 50_000},
        "cluster": {"round_size": round_size},
        "sinks": {"scores": {"type": "jsonl", "path": str(out / "scores.jsonl")}},
    })


def run_once(bootstrap: str, topic: str, n: int, workers: int, round_size: int, tmp: Path,
             read_ahead: bool = True) -> dict:
    import distributed

    from online_gmm.scale_out import ScaleOutPipeline
    out = tmp / uuid.uuid4().hex[:8]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address=None)
    client = distributed.Client(cluster, set_as_default=False)
    try:
        job = ScaleOutPipeline(job_config(bootstrap, topic, out, round_size), client=client,
                               read_ahead=read_ahead)
        try:
            t0 = time.perf_counter()
            summary = job.run(max_records=n)
            wall = time.perf_counter() - t0
        finally:
            job.close()
    finally:
        client.close()
        cluster.close()
    assert summary.records == n, (summary.records, n)
    # the first round holds the warm-up fit (a one-off): per-round costs from the others
    steady = job.timings[1:] or job.timings
    per_round = n / len(job.timings)
    return {"rate": per_round * len(steady) / sum(t["wall"] for t in steady), "end_to_end": n / wall,
            "wall": wall, "rounds": len(job.timings),
            "round_wall": statistics.median(t["wall"] for t in steady),
            "busiest_worker": statistics.median(t["busiest_worker"] for t in steady),
            "merge": statistics.median(t["merge"] for t in steady),
            "read_ahead": statistics.median(t["read_ahead"] for t in steady)}


def warm_imports() -> None:
    """Import what the coordinator's warm-up fit imports (scikit-learn's k-means), so that the first
    timed run does not pay it alone."""
    from online_gmm.model_spec import ModelSpec, check_random_state
    online = ModelSpec(n_components=2, warm_up=50)._new_online(2, check_random_state(0))
    online.update(np.random.default_rng(0).normal(size=(100, 2)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_920_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--round-size", type=int, default=80_000, help="good records per partition per round")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-read-ahead", action="store_true",
                    help="workers read a round only when its task arrives ([cluster] read_ahead = false)")
    args = ap.parse_args(argv)
    per_round = args.partitions * args.round_size
    n = args.records // per_round * per_round          # whole rounds: every run stops on the same one
    values = make_values(n)
    results: dict[int, list[dict]] = {1: [], 2: []}
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        topic = f"scale-{uuid.uuid4().hex[:8]}"
        produce(broker.bootstrap_servers, topic, values, args.partitions)
        print(f"broker {broker!r}; {n} events x {len(FIELDS)} floats on {args.partitions} partitions; "
              f"K=4 full; {args.round_size} records per partition per round; read-ahead "
              f"{'off' if args.no_read_ahead else 'on'}; BLAS 1 thread")
        warm_imports()
        for rep in range(args.repeats):
            for workers in ((1, 2) if rep % 2 == 0 else (2, 1)):
                r = run_once(broker.bootstrap_servers, topic, n, workers, args.round_size, Path(tmp),
                             read_ahead=not args.no_read_ahead)
                results[workers].append(r)
                print(f"  run {rep + 1}, {workers} worker(s): {r['rate']:,.0f} rec/s after the first "
                      f"round, {r['end_to_end']:,.0f} end to end ({r['rounds']} rounds, {r['wall']:.1f} s)",
                      flush=True)

    def med(w: int, key: str) -> float:
        return statistics.median(r[key] for r in results[w])

    print(f"\n{'':<34}{'1 worker':>14}{'2 workers':>14}")
    for label, key, scale, fmt in (("records per second, after round 1", "rate", 1, ",.0f"),
                                   ("records per second, end to end", "end_to_end", 1, ",.0f"),
                                   ("round wall (ms)", "round_wall", 1e3, ".1f"),
                                   ("busiest worker's tasks (ms)", "busiest_worker", 1e3, ".1f"),
                                   ("  + its read-ahead, between rounds", "read_ahead", 1e3, ".1f"),
                                   ("merge + update (ms)", "merge", 1e3, ".2f")):
        print(f"{label:<34}{med(1, key) * scale:>14{fmt}}{med(2, key) * scale:>14{fmt}}")
    # the round's wall time beyond its tasks (the read-ahead overlaps it, so it is not subtracted)
    coord = {w: med(w, "round_wall") - med(w, "busiest_worker") for w in (1, 2)}
    print(f"{'coordination per round (ms)':<34}{coord[1] * 1e3:>14.1f}{coord[2] * 1e3:>14.1f}")
    print(f"{'coordination share of a round':<34}{coord[1] / med(1, 'round_wall'):>14.1%}"
          f"{coord[2] / med(2, 'round_wall'):>14.1%}")
    ratio = med(2, "rate") / med(1, "rate")
    print(f"\n2 workers / 1 worker: {ratio:.2f}x (target >= 1.6x): {'PASS' if ratio >= 1.6 else 'MISS'}")

    # projection: one partition per worker, round_size records each; a task's time per record from
    # the 2-worker run (each worker then holds partitions/2), the coordinator's cost split into a fixed
    # part and a part per partition (the merge grows with the partitions it receives)
    per_partition = max(med(2, "merge") / args.partitions, 1e-6)
    fixed = max(coord[2] - med(2, "merge"), 0.0)
    task_per_record = med(2, "busiest_worker") / (args.round_size * -(-args.partitions // 2))
    t_task = task_per_record * args.round_size
    print("\nprojection, one partition per worker (cost per partition grows with N: the merge of "
          "statistics, sketches and sample candidates, and the scheduling of one task each):")
    print(f"  task {t_task * 1e3:.1f} ms per round of {args.round_size}; coordinator fixed "
          f"{fixed * 1e3:.1f} ms + {per_partition * 1e3:.2f} ms per partition")
    for w in (16, 64):
        rate = w * args.round_size / (t_task + fixed + per_partition * w)
        print(f"  {w:>3} workers: {rate:,.0f} rec/s ({rate / w:,.0f} per worker)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
