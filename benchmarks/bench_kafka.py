"""Kafka throughput of both clients, side by side: produce, bare consume, consume + decode, the project's source.

Starts its own :class:`connectors.broker.LocalBroker` (Tansu on 127.0.0.1, memory storage), and on one
partition measures, for kafka-python and confluent-kafka (librdkafka), on ``--n`` small JSON messages
with 8 float fields:

* **produce**: the bare client (a send/produce loop over pre-encoded values, then flush), and the
  project's :class:`~connectors.kafka.KafkaSink` (``write_columns`` of the 8 float columns: msgspec
  encoding included);
* **consume**: the bare client, no decoding (``poll(max_records=10000)`` / ``consume(1000, 1.0)``);
* **consume + decode**: :func:`bare_consume_decode`, the bare client plus msgspec's typed decoding of
  every value into an (n, 8) float64 matrix (the anchor of ``bench_pipeline.py``);
* **KafkaSource**: the project's source with :class:`~connectors.decoders.JSONDecoder`, batches of
  ``--batch`` (a float matrix, columns and positions).

Medians of ``--repeats`` runs; BLAS pinned to one thread; the broker is stopped by its PID at the end.

Run::

    python benchmarks/bench_kafka.py [--n 200000] [--repeats 3] [--batch 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from itertools import chain
from pathlib import Path
from typing import Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec  # noqa: E402
import numpy as np  # noqa: E402

from connectors.broker import LocalBroker  # noqa: E402
from connectors.decoders import JSONDecoder  # noqa: E402
from connectors.kafka import KafkaSink, KafkaSource  # noqa: E402

FIELDS = [f"f{i}" for i in range(8)]
CLIENTS = ("kafka-python", "confluent")
#: messages per poll/consume call of the bare loops: kafka-python gains from large polls; librdkafka's
#: consume(n, timeout) blocks until n messages are queued, and 1000 measured faster than 10 000
#: (bare 269k-382k vs 201k-307k msg/s, with decoding 119k-180k vs 101k-158k rec/s, 2 runs)
CHUNK = {"kafka-python": 10_000, "confluent": 1_000}
#: kafka-python settings of every kafka-python consumer here (large fetches)
KP_CONSUMER = {"fetch_max_bytes": 52428800, "max_partition_fetch_bytes": 4 * 1048576}
#: confluent-kafka settings of the bare consumers (the KafkaSource sets the same ones by default)
CK_CONSUMER = {"auto.offset.reset": "earliest", "enable.auto.commit": False, "enable.partition.eof": False,
               "fetch.queue.backoff.ms": 10}

_astuple = msgspec.structs.astuple
_LINE_DECODERS: dict[tuple[str, ...], Callable[[bytes], list]] = {}


def decode_matrix(values: list[bytes], fields: Sequence[str] = FIELDS) -> np.ndarray:
    """msgspec's typed decoding of JSON objects with float ``fields`` into an (n, d) float64 matrix.

    One ``decode_lines`` call over the joined values, the rows' tuples flattened into ``np.fromiter``
    (the fastest of the variants tried: 290k-315k rec/s, against 230k-260k for a JSON array of the
    values and ``np.array`` of the tuples).  Fields other than ``fields`` are ignored.
    """
    key = tuple(fields)
    decode_lines = _LINE_DECODERS.get(key)
    if decode_lines is None:
        names = [f"f{j}" for j in range(len(key))]
        row = msgspec.defstruct("Row", [(n, float) for n in names], rename=dict(zip(names, key)))
        decode_lines = _LINE_DECODERS[key] = msgspec.json.Decoder(row).decode_lines
    rows = decode_lines(b"\n".join(values))
    d = len(key)
    return np.fromiter(chain.from_iterable(map(_astuple, rows)), np.float64, len(rows) * d).reshape(-1, d)


def make_values(n: int, seed: int = 0) -> tuple[np.ndarray, list[bytes]]:
    """n JSON objects ``{"f0": ..., ..., "f7": ...}`` (6 decimals) and the float matrix they encode."""
    X = np.round(np.random.default_rng(seed).normal(size=(n, len(FIELDS))), 6)
    encode = msgspec.json.Encoder().encode
    return X, [encode(dict(zip(FIELDS, row))) for row in X.tolist()]


def create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


# ---------------------------------------------------------------------- produce
def bare_produce(client: str, bootstrap: str, topic: str, values: list[bytes]) -> float:
    """Messages per second of a bare produce loop plus flush (idempotent producer, acks=all)."""
    if client == "kafka-python":
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024,
                                 enable_idempotence=True, acks="all")
        t0 = time.perf_counter()
        send = producer.send
        for v in values:
            send(topic, v)
        producer.flush(timeout=300)
        rate = len(values) / (time.perf_counter() - t0)
        producer.close()
        return rate
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True,
                         "acks": "all", "delivery.report.only.error": True})
    t0 = time.perf_counter()
    produce, poll = producer.produce, producer.poll
    for v in values:
        while True:
            try:
                produce(topic, v)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                poll(0.05)
    assert producer.flush(300) == 0
    return len(values) / (time.perf_counter() - t0)


def sink_produce(client: str, bootstrap: str, topic: str, X: np.ndarray) -> float:
    """Records per second of ``KafkaSink.write_columns`` (8 float columns, msgspec-encoded) plus flush."""
    columns = {f: X[:, j] for j, f in enumerate(FIELDS)}
    with KafkaSink(topic, bootstrap, client=client) as sink:
        t0 = time.perf_counter()
        for start in range(0, len(X), 1000):
            sink.write_columns({k: v[start:start + 1000] for k, v in columns.items()})
        sink.flush(timeout=300)
        rate = len(X) / (time.perf_counter() - t0)
        assert sink.position() == {"delivered": len(X)}
    return rate


# ---------------------------------------------------------------------- consume
def _bare_loop(client: str, bootstrap: str, topic: str, n: int,
               on_values: Callable[[list[bytes]], object] | None) -> float:
    """Records per second of reading n messages from offset 0 of every partition, without a group."""
    if client == "kafka-python":
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                 auto_offset_reset="earliest", **KP_CONSUMER)
        consumer.assign([TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))])
        got = 0
        t0 = time.perf_counter()
        while got < n:
            for msgs in consumer.poll(timeout_ms=1000, max_records=CHUNK[client]).values():
                values = [m.value for m in msgs]
                if on_values is not None:
                    on_values(values)
                got += len(values)
        elapsed = time.perf_counter() - t0
        consumer.close()
    else:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}", **CK_CONSUMER})
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
        got = 0
        value = __import__("confluent_kafka").Message.value
        t0 = time.perf_counter()
        while got < n:
            msgs = consumer.consume(CHUNK[client], 1.0)
            for m in msgs:  # errors are rare; librdkafka needs them checked
                if m.error() is not None:
                    raise RuntimeError(m.error())
            values = list(map(value, msgs))
            if on_values is not None and values:
                on_values(values)
            got += len(values)
        elapsed = time.perf_counter() - t0
        consumer.close()
    assert got == n, (got, n)
    return n / elapsed


def bare_consume(client: str, bootstrap: str, topic: str, n: int) -> float:
    """Messages per second of the bare client reading n messages (no decoding)."""
    return _bare_loop(client, bootstrap, topic, n, None)


def bare_consume_decode(client: str, bootstrap: str, topic: str, n: int,
                        fields: Sequence[str] = FIELDS) -> float:
    """Records per second of the bare client reading n messages and decoding them into a float matrix.

    Reads the first ``n`` messages of every partition of ``topic`` (no group; ``client`` is
    ``"kafka-python"`` or ``"confluent"``) and decodes each poll's values with :func:`decode_matrix`
    into an (n_poll, len(fields)) float64 matrix.  The values must be JSON objects whose ``fields``
    are numbers (default ``f0``..``f7``, as :func:`make_values` writes them).  This is the anchor the
    pipeline benchmark compares ``online-gmm run`` from Kafka with.
    """
    rows = [0]

    def decode(values: list[bytes]) -> None:
        rows[0] += decode_matrix(values, fields).shape[0]

    rate = _bare_loop(client, bootstrap, topic, n, decode)
    assert rows[0] == n
    return rate


def source_consume(client: str, bootstrap: str, topic: str, n: int, batch: int) -> float:
    """Records per second of the project's KafkaSource + JSONDecoder (no group), batches of ``batch``."""
    settings = KP_CONSUMER if client == "kafka-python" else {}
    src = KafkaSource(topic, bootstrap, None, JSONDecoder(FIELDS), client=client, **settings)
    got = rows = 0
    t0 = time.perf_counter()
    while got < n:
        b = src.read(batch, timeout=1.0)
        got += b.n_records
        rows += b.X.shape[0]
    elapsed = time.perf_counter() - t0
    src.close()
    assert got == n and rows == n, (got, rows, n)
    return n / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000, help="records per KafkaSource.read")
    parser.add_argument("--clients", nargs="+", default=list(CLIENTS), choices=CLIENTS)
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    from connectors.kafka._kafka_python import crc_is_native

    X, values = make_values(args.n)
    np.testing.assert_array_equal(decode_matrix(values[:100]), X[:100])
    rows = ["produce, bare client", "produce, KafkaSink.write_columns", "consume, bare client",
            "consume + decode (msgspec), bare", f"KafkaSource + JSONDecoder (batch {args.batch})"]
    results: dict[tuple[str, str], list[float]] = {}
    with threadpool_limits(1), LocalBroker() as broker:
        bs = broker.bootstrap_servers
        print(f"broker {broker!r}; {args.n} messages x {len(FIELDS)} float fields "
              f"({sum(map(len, values)) / args.n:.0f} bytes each), 1 partition; "
              f"kafka-python CRC32C in C: {crc_is_native()}")
        for rep in range(args.repeats):
            for client in args.clients:
                topic = f"bench-{client}-{rep}"
                create_topic(bs, topic)
                out = [bare_produce(client, bs, topic, values)]
                sink_topic = f"sink-{client}-{rep}"
                create_topic(bs, sink_topic)
                out.append(sink_produce(client, bs, sink_topic, X))
                out.append(bare_consume(client, bs, topic, args.n))
                out.append(bare_consume_decode(client, bs, topic, args.n))
                out.append(source_consume(client, bs, topic, args.n, args.batch))
                for row, rate in zip(rows, out):
                    results.setdefault((row, client), []).append(rate)
                print(f"  run {rep + 1} {client}: " + ", ".join(f"{r:,.0f}" for r in out), flush=True)
    print(f"\n{'records (messages) per second, median of ' + str(args.repeats):<46}"
          + "".join(f"{c:>16}" for c in args.clients))
    for row in rows:
        print(f"{row:<46}" + "".join(f"{statistics.median(results[(row, c)]):>16,.0f}" for c in args.clients))
    return 0


if __name__ == "__main__":
    sys.exit(main())
