"""KafkaSource decode throughput against a bare kafka-python consumer doing ``json.loads``.

Starts its own :class:`connectors.broker.LocalBroker` (Tansu on 127.0.0.1, memory storage), produces
``--n`` small JSON events with 16 numeric fields, then alternates timed runs of

* **bare**: ``KafkaConsumer.poll(max_records=...)`` + ``json.loads`` of every value (nothing more);
* **KafkaSource**: ``KafkaSource.read(...)`` through the real :class:`~connectors.decoders.JSONDecoder`,
  ending with a float64 array plus per-record meta and positions.

Both read every partition without a consumer group, from offset 0, with the same client settings.
BLAS is pinned to one thread.  The broker is stopped by its PID at the end.

Run::

    python benchmarks/bench_kafka.py [--n 100000] [--repeats 5] [--batch 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.admin import KafkaAdminClient, NewTopic  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from connectors.broker import LocalBroker  # noqa: E402
from connectors.decoders import JSONDecoder  # noqa: E402
from connectors.kafka import KafkaSource  # noqa: E402

FIELDS = [f"f{i}" for i in range(16)]
CLIENT = {"fetch_max_bytes": 52428800, "max_partition_fetch_bytes": 4 * 1048576}


def produce(bootstrap: str, topic: str, n: int, partitions: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    values = np.round(rng.normal(size=(n, len(FIELDS))), 6)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    t0 = time.perf_counter()
    for i in range(n):
        raw = json.dumps(dict(zip(FIELDS, values[i].tolist()))).encode()
        producer.send(topic, raw, partition=i % partitions)
    producer.flush(timeout=120)
    producer.close()
    return n / (time.perf_counter() - t0)


def run_bare(bootstrap: str, topic: str, n: int, partitions: int, batch: int) -> float:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", **CLIENT)
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    got, checksum = 0, 0.0
    t0 = time.perf_counter()
    while got < n:
        for msgs in consumer.poll(timeout_ms=1000, max_records=batch).values():
            for m in msgs:
                checksum += json.loads(m.value)["f0"]
            got += len(msgs)
    elapsed = time.perf_counter() - t0
    consumer.close()
    assert got == n, (got, n)
    return elapsed


def run_source(bootstrap: str, topic: str, n: int, batch: int) -> float:
    src = KafkaSource(topic, bootstrap, None, JSONDecoder(FIELDS), **CLIENT)
    got, rows = 0, 0
    t0 = time.perf_counter()
    while got < n:
        b = src.read(batch, timeout=1.0)
        got += b.n_records
        rows += b.X.shape[0]
    elapsed = time.perf_counter() - t0
    src.close()
    assert got == n and rows == n, (got, rows, n)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args(argv)

    with threadpool_limits(1), LocalBroker() as broker:
        bs, topic = broker.bootstrap_servers, "bench"
        admin = KafkaAdminClient(bootstrap_servers=bs)
        admin.create_topics([NewTopic(topic, num_partitions=args.partitions, replication_factor=1)])
        admin.close()
        rate = produce(bs, topic, args.n, args.partitions)
        print(f"broker {broker!r}; produced {args.n} events ({len(FIELDS)} fields) at {rate:,.0f} msg/s")
        bare, ours = [], []
        run_bare(bs, topic, args.n, args.partitions, args.batch)  # warm-up (imports, connections)
        for _ in range(args.repeats):
            bare.append(run_bare(bs, topic, args.n, args.partitions, args.batch))
            ours.append(run_source(bs, topic, args.n, args.batch))
    tb, to = statistics.median(bare), statistics.median(ours)
    print(f"\n{'consumer':<44}{'median s':>10}{'records/s':>12}")
    print(f"{'bare kafka-python poll + json.loads':<44}{tb:>10.3f}{args.n / tb:>12,.0f}")
    print(f"{'KafkaSource + JSONDecoder -> float64 array':<44}{to:>10.3f}{args.n / to:>12,.0f}")
    ratio = tb / to
    print(f"\nratio KafkaSource / bare = {ratio:.2f}x (target >= 0.8x); "
          f"runs bare={[round(t, 3) for t in bare]} source={[round(t, 3) for t in ours]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
