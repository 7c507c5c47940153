"""KafkaSource / KafkaSink against a real Kafka-protocol broker (Tansu, see tests/conftest.py)."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from typing import Any

import numpy as np
import pytest

from connectors.base import Batch, ConnectorError, DictColumn, PositionError
from connectors.broker import LocalBroker
from connectors.deadletter import DeadLetterSink
from connectors.decoders import JSONDecoder
from connectors.kafka import (
    DEFAULT_CLIENT,
    KafkaConfigError,
    KafkaSink,
    KafkaSource,
    _check_settings,
    resolve_client,
)
from tests.conftest import KAFKA_GROUP_SETTINGS

kafka = pytest.importorskip("kafka")
from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402

pytestmark = pytest.mark.timeout(120)

#: Both clients run every real-broker test.
CLIENTS = ["kafka-python", "confluent"]


@pytest.fixture(params=CLIENTS)
def client(request) -> str:
    """The Kafka client under test (confluent-kafka must be installed: the test extra has it)."""
    if request.param == "confluent" and os.environ.get("CI") != "true":
        pytest.importorskip("confluent_kafka")  # under CI a missing client fails the tests instead
    return request.param

FIELDS = ["a", "b.c"]
BAD_KINDS = [
    b'{"a": 1.0, "b": {"c": ',  # malformed JSON
    b'{"a": 1.0}',  # missing field
    b'{"a": NaN, "b": {"c": 1.0}}',  # NaN
    b"plain text, not json",  # text
    b'{"a": "1.5", "b": {"c": 2.0}}',  # number as string
]


def make_events(n: int, start: int = 0, bad_every: int | None = 7) -> tuple[list[bytes], dict[int, bytes]]:
    """n raw events; event i with i % bad_every == 3 is bad (none if None). Good: a=i, b.c=-i/2."""
    raws, bad = [], {}
    for i in range(start, start + n):
        if bad_every is not None and i % bad_every == 3:
            raw = BAD_KINDS[(i // bad_every) % len(BAD_KINDS)]
            bad[i] = raw
        else:
            raw = json.dumps({"a": float(i), "b": {"c": -i / 2}, "id": i}).encode()
        raws.append(raw)
    return raws, bad


def produce(bootstrap: str, topic: str, raws: list[bytes], partitions: int = 3,
            keys: list[bytes] | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        for i, raw in enumerate(raws):
            producer.send(topic, value=raw, partition=i % partitions, key=None if keys is None else keys[i])
        producer.flush(timeout=30)
    finally:
        producer.close()


def source(bootstrap: str, topic: str, client: str, group: str | None, **kwargs: Any) -> KafkaSource:
    settings = dict(KAFKA_GROUP_SETTINGS) if group is not None else {}
    settings.update(kwargs)
    return KafkaSource(topic, bootstrap, group, JSONDecoder(FIELDS), client=client, **settings)


def drain(src: KafkaSource, n_expected: int, *, deadline_s: float = 20.0, max_records: int = 200,
          settle_reads: int = 2, on_batch=None) -> list[Batch]:
    """Read until n_expected records (good + rejected) arrived, then a few idle reads to catch extras."""
    batches, total, end = [], 0, time.monotonic() + deadline_s
    while total < n_expected and time.monotonic() < end:
        batch = src.read(max_records, timeout=0.5)
        assert batch.n_records <= max_records
        if batch.n_records:
            batches.append(batch)
            total += batch.n_records
            if on_batch is not None:
                on_batch(batch)
    for _ in range(settle_reads):
        batch = src.read(max_records, timeout=0.3)
        if batch.n_records:
            batches.append(batch)
    return batches


def records_of(batches: list[Batch]) -> tuple[list[dict], list]:
    metas = [m for b in batches for m in b.meta]
    rejects = [r for b in batches for r in b.rejects]
    return metas, rejects


def read_topic(bootstrap: str, topic: str, n_expected: int, deadline_s: float = 15.0) -> list[Any]:
    """Everything in a topic, through a bare consumer (no group)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic)
        consumer.assign([TopicPartition(topic, p) for p in parts])
        out, end = [], time.monotonic() + deadline_s
        while len(out) < n_expected and time.monotonic() < end:
            for msgs in consumer.poll(300).values():
                out.extend(msgs)
        for msgs in consumer.poll(300).values():  # anything extra
            out.extend(msgs)
        return out
    finally:
        consumer.close()


# ---------------------------------------------------------------------- acceptance
def test_good_and_bad_records_dead_letters_and_resume(kafka_broker, kafka_topic, kafka_group, client):
    bs = kafka_broker.bootstrap_servers
    topic, dlq_topic = kafka_topic(3), kafka_topic(1, prefix="dlq")
    n = 700
    raws, bad = make_events(n)
    produce(bs, topic, raws)
    n_bad = len(bad)
    assert 0 < n_bad < n

    group = kafka_group()
    dlq = DeadLetterSink(KafkaSink(dlq_topic, bs, client=client))  # the shared dead-letter format, on Kafka
    with source(bs, topic, client, group) as src:
        batches = drain(src, n, on_batch=dlq.write_batch)
        dlq.flush()
        saved = src.position()
    dlq.close()

    metas, rejects = records_of(batches)
    X = np.vstack([b.X for b in batches])
    assert X.shape == (n - n_bad, 2) and X.dtype == np.float64 and np.isfinite(X).all()
    assert len(metas) == n - n_bad and len(rejects) == n_bad
    good_ids = sorted(int(x) for x in X[:, 0])
    assert good_ids == sorted(set(range(n)) - set(bad))
    np.testing.assert_array_equal(X[:, 1], -X[:, 0] / 2)
    # meta: where each record came from; event i was sent to partition i % 3 at offset i // 3
    for row, m in zip(X, metas):
        i = int(row[0])
        assert m == {"source": f"kafka:{topic}", "topic": topic, "partition": i % 3, "offset": i // 3, "key": None}
    for r in rejects:
        i = r.meta["offset"] * 3 + r.meta["partition"]
        assert r.raw == bad[i] and r.reason
    assert saved == {topic: {str(p): len(range(p, n, 3)) for p in range(3)}}

    # the dead letters are on the Kafka topic, with reasons and origin
    dead = [json.loads(m.value) for m in read_topic(bs, dlq_topic, n_bad)]
    assert len(dead) == n_bad
    assert {(d["partition"], d["offset"]) for d in dead} == {(i % 3, i // 3) for i in bad}
    reasons = " | ".join(d["reason"] for d in dead)
    assert all(d["reason"] and d["topic"] == topic and d["source"] == f"kafka:{topic}" for d in dead)
    assert all(d["raw"].encode() == bad[d["offset"] * 3 + d["partition"]] for d in dead)
    assert all(isinstance(d["position"], dict) and topic in d["position"] for d in dead)
    assert "'a'" in reasons  # the decoder names the offending field somewhere

    # more events after the close; a new source seeked to the saved position sees exactly those
    more, more_bad = make_events(90, start=n)
    produce(bs, topic, more)
    with source(bs, topic, client, group) as src2:  # nothing was committed: the group alone would restart at 0
        src2.seek(saved)
        assert src2.position() == saved
        batches2 = drain(src2, len(more))
        final = src2.position()
    metas2, rejects2 = records_of(batches2)
    seen2 = sorted([int(r[0]) for b in batches2 for r in b.X])
    assert seen2 == sorted(set(range(n, n + 90)) - set(more_bad))
    assert len(rejects2) == len(more_bad)
    assert {(m["partition"], m["offset"]) for m in metas} .isdisjoint({(m["partition"], m["offset"]) for m in metas2})
    assert final == {topic: {str(p): len(range(p, n + 90, 3)) for p in range(3)}}


def test_commit_only_when_told(kafka_broker, kafka_topic, kafka_group, client):
    bs = kafka_broker.bootstrap_servers
    topic = kafka_topic(3)
    raws, _ = make_events(300, bad_every=None)
    produce(bs, topic, raws)
    group = kafka_group()

    first: list[dict] = []
    with source(bs, topic, client, group) as src:
        while len(first) < 120:
            first.extend(src.read(120 - len(first), timeout=0.5).meta)
        committed_at = src.position()
        src.commit()
        rest = drain(src, 300 - 120)  # read everything else, never commit it
        assert sum(b.n_records for b in rest) == 180
    assert len(first) == 120

    # a restarted member of the group resumes from the last commit: exactly the 180 uncommitted ones
    with source(bs, topic, client, group) as src2:
        again = drain(src2, 180)
        assert src2.position() == {topic: {str(p): 100 for p in range(3)}}
    metas_again, _ = records_of(again)
    keys_first = {(m["partition"], m["offset"]) for m in first}
    keys_again = {(m["partition"], m["offset"]) for m in metas_again}
    assert len(metas_again) == 180 and keys_first.isdisjoint(keys_again)
    assert keys_first | keys_again == {(i % 3, i // 3) for i in range(300)}
    for (p, off) in keys_again:
        assert off >= committed_at[topic].get(str(p), 0)


class _Member(threading.Thread):
    """One group member in its own thread (as in production): read, then commit what was read."""

    def __init__(self, src: KafkaSource) -> None:
        super().__init__(daemon=True)
        self.src, self.metas, self.assigned = src, [], []
        self.stop, self.error = threading.Event(), None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                batch = self.src.read(100, timeout=0.2)
                self.metas.extend(batch.meta)
                if batch.n_records:
                    self.src.commit(batch.position)  # the pipeline commits after each checkpoint
                self.assigned = self.src.assignment()
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            self.src.close()


def _wait(predicate, seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)


def test_two_consumers_split_partitions_exactly_once(kafka_broker, kafka_topic, kafka_group, client):
    bs = kafka_broker.bootstrap_servers
    topic = kafka_topic(3)
    group = kafka_group()
    a, b = _Member(source(bs, topic, client, group)), _Member(source(bs, topic, client, group))
    every = [(topic, p) for p in range(3)]
    try:
        a.start()
        b.start()
        _wait(lambda: a.assigned and b.assigned and sorted(a.assigned + b.assigned) == every, 20,
              "both members to share the 3 partitions")
        raws, _ = make_events(600, bad_every=None)
        produce(bs, topic, raws)
        _wait(lambda: len(a.metas) + len(b.metas) >= 600, 20, "600 records")
        time.sleep(0.5)  # a chance for duplicates to show up
        assert a.metas and b.metas
        assert {m["partition"] for m in a.metas}.isdisjoint({m["partition"] for m in b.metas})
        keys = [(m["partition"], m["offset"]) for m in a.metas + b.metas]
        assert len(keys) == 600 and set(keys) == {(i % 3, i // 3) for i in range(600)}

        # b leaves (everything it read is committed); a takes over b's partitions from b's commits
        b.stop.set()
        b.join(10)
        n_a = len(a.metas)
        more, _ = make_events(150, start=600, bad_every=None)
        produce(bs, topic, more)
        _wait(lambda: len(a.metas) - n_a >= 150, 20, "the 150 new records")
        time.sleep(0.5)
        assert sorted(m["offset"] * 3 + m["partition"] for m in a.metas[n_a:]) == list(range(600, 750))
        assert a.assigned == every
        assert a.error is None and b.error is None
    finally:
        a.stop.set()
        b.stop.set()
        a.join(10)
        b.join(10)


def test_group_less_source_reads_every_partition(kafka_broker, kafka_topic, client):
    bs = kafka_broker.bootstrap_servers
    topic = kafka_topic(2)
    raws, _ = make_events(40, bad_every=None)
    produce(bs, topic, raws, partitions=2)
    with source(bs, topic, client, None, max_idle_s=0.5) as src:
        first = drain(src, 5, max_records=5, settle_reads=0)
        # lag(): high-water mark of the last fetch minus the next offset, per partition (20 each)
        read = {p: 0 for p in (0, 1)}
        for b in first:
            for p in b.columns["partition"].tolist():
                read[p] += 1
        lag = src.lag()
        assert lag and set(lag) <= {(topic, 0), (topic, 1)}
        assert all(n == 20 - read[p] for (_, p), n in lag.items()), (lag, read)
        batches = first + drain(src, 40 - sum(b.n_records for b in first))
        assert sum(b.n_records for b in batches) == 40
        assert src.lag() == {(topic, 0): 0, (topic, 1): 0}
        with pytest.raises(ConnectorError, match="group_id"):
            src.commit()
        # max_idle_s: a finite run ends once nothing arrives for that long
        statuses = [src.read(10, timeout=0.3).status for _ in range(4)]
        assert statuses[-1] == "end"


def test_idle_clock_starts_with_the_assignment(kafka_broker, kafka_topic, kafka_group, client):
    """A member waiting for the group's assignment (a restarted job, while a killed member's session
    runs out) is not idle: max_idle_s counts only while it owns partitions, so it never ends early."""
    bs = kafka_broker.bootstrap_servers
    topic = kafka_topic(1)
    raws, _ = make_events(30, bad_every=None)
    produce(bs, topic, raws, partitions=1)
    group = kafka_group()
    with source(bs, topic, client, group) as holder:     # a member that holds the partition...
        drain(holder, 30)
        with source(bs, topic, client, group, max_idle_s=0.3) as late:
            # ...while the second member waits for its turn: never "end" while it owns nothing
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                batch = late.read(10, timeout=0.1)
                holder.read(10, timeout=0.0)             # the holder stays alive in the group
                if late.assignment():
                    break
                assert batch.status == "idle", "ended while waiting for the assignment"
    with source(bs, topic, client, kafka_group(), max_idle_s=0.3) as fresh:
        batches = drain(fresh, 30)
        assert sum(b.n_records for b in batches) == 30


def test_seek_validates_position(kafka_broker, kafka_topic, kafka_group, client):
    topic = kafka_topic(1)
    with source(kafka_broker.bootstrap_servers, topic, client, kafka_group()) as src:
        with pytest.raises(ValueError, match="does not read"):
            src.seek({"another-topic": {"0": 3}})
        with pytest.raises(ValueError, match="non-negative int"):
            src.seek({topic: {"0": -1}})
        with pytest.raises(ValueError, match="position must be a dict"):
            src.seek([topic, 0, 3])
        src.seek({topic: {"0": 0}})
        assert src.position() == {topic: {"0": 0}}
        assert json.loads(json.dumps(src.position())) == src.position()


def test_seek_in_place_rereads_from_there(kafka_broker, kafka_topic, kafka_group, client):
    bs = kafka_broker.bootstrap_servers
    topic = kafka_topic(2)
    raws, _ = make_events(100, bad_every=None)
    produce(bs, topic, raws, partitions=2)
    with source(bs, topic, client, kafka_group()) as src:
        first = drain(src, 100)
        assert sum(b.n_records for b in first) == 100 and src.assignment() == [(topic, 0), (topic, 1)]
        src.seek({topic: {"0": 40, "1": 45}})  # both partitions owned: applied at once
        assert src.position() == {topic: {"0": 40, "1": 45}}
        again = drain(src, 15)
        assert src.position() == {topic: {"0": 50, "1": 50}}
    keys = sorted((m["partition"], m["offset"]) for b in again for m in b.meta)
    assert keys == [(0, o) for o in range(40, 50)] + [(1, o) for o in range(45, 50)]


# ---------------------------------------------------------------------- lost positions
@pytest.fixture()
def own_broker():
    """A broker of this test alone (it gets restarted, which wipes every topic)."""
    broker = LocalBroker()
    try:
        broker.start()
    except ConnectorError as exc:  # pragma: no cover - same policy as kafka_broker
        import os

        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot start the local Kafka test broker: {exc}")
        pytest.skip(f"cannot start the local Kafka test broker: {exc}")
    yield broker
    broker.stop()
    assert not broker.is_running


def _create(bs: str, topic: str, partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bs)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


def _read_until_error(src: KafkaSource, seconds: float = 10.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        src.read(100, timeout=0.3)
    pytest.fail(f"no PositionError within {seconds} s; position={src.position()!r}")


def _saved_position(bs: str, topic: str, n: int, partitions: int, client: str) -> dict:
    raws, _ = make_events(n, bad_every=None)
    produce(bs, topic, raws, partitions=partitions)
    with source(bs, topic, client, "g-before") as src:
        drain(src, n, settle_reads=0)
        saved = src.position()
        src.commit()
    assert saved == {topic: {str(p): len(range(p, n, partitions)) for p in range(partitions)}}
    return saved


def test_position_error_when_log_is_shorter_after_restart(own_broker, client):
    bs, topic = own_broker.bootstrap_servers, "events"
    _create(bs, topic, 2)
    saved = _saved_position(bs, topic, 60, 2, client)
    own_broker.restart()  # memory storage: topics and commits are gone
    assert own_broker.bootstrap_servers == bs
    _create(bs, topic, 2)
    small, _ = make_events(10, bad_every=None)
    produce(bs, topic, small, partitions=2)  # 5 per partition < 30 saved
    with source(bs, topic, client, "g-after") as src:
        src.seek(saved)
        with pytest.raises(PositionError, match=r"offset 30 of topic 'events' partition \d.*high-water mark is 5"):
            _read_until_error(src)


def test_position_error_when_topic_or_partition_vanished(own_broker, client):
    bs, topic = own_broker.bootstrap_servers, "events"
    _create(bs, topic, 2)
    saved = _saved_position(bs, topic, 20, 2, client)
    own_broker.restart()
    with source(bs, topic, client, "g-after") as src:  # the topic is gone (Tansu re-creates it empty on lookup)
        src.seek(saved)
        with pytest.raises(PositionError, match="no longer exists.*(topic does not exist|high-water mark is 0)"):
            _read_until_error(src)
    own_broker.restart()
    _create(bs, topic, 1)  # recreated with fewer partitions
    with source(bs, topic, client, "g-after2") as src:
        src.seek(saved)
        with pytest.raises(PositionError, match=r"partition 1 .*partitions \[0\]"):
            _read_until_error(src)


def test_live_consumer_notices_broker_restart(own_broker, client):
    bs, topic = own_broker.bootstrap_servers, "events"
    _create(bs, topic, 2)
    raws, _ = make_events(40, bad_every=None)
    produce(bs, topic, raws, partitions=2)
    src = source(bs, topic, client, "g-live")
    try:
        drain(src, 40, settle_reads=0)
        own_broker.restart()
        _create(bs, topic, 2)
        produce(bs, topic, raws[:6], partitions=2)  # 3 per partition < 20 already read
        with pytest.raises(PositionError, match="no longer exists"):
            _read_until_error(src, seconds=20)
    finally:
        src.close()


# ---------------------------------------------------------------------- sink
def test_sink_round_trip_with_keys(kafka_broker, kafka_topic, kafka_group, client):
    bs = kafka_broker.bootstrap_servers
    topic = kafka_topic(3)
    records = [{"a": np.float64(i), "b": {"c": float(i) * 2}, "user": f"u{i % 5}", "nan": float("nan")}
               for i in range(100)]
    with KafkaSink(topic, bs, key="user", linger_ms=5, client=client) as sink:
        sink.write(records[:60])
        sink.flush()
        assert sink.position() == {"delivered": 60}
        sink.write(records[60:])
    # close() flushed the rest
    msgs = read_topic(bs, topic, 100)
    assert len(msgs) == 100
    by_key: dict[str, set[int]] = {}
    for m in msgs:
        value = json.loads(m.value)  # strict JSON: NaN became null
        assert value["nan"] is None and m.key.decode() == value["user"]
        by_key.setdefault(value["user"], set()).add(m.partition)
    assert sorted(by_key) == [f"u{i}" for i in range(5)]
    assert all(len(parts) == 1 for parts in by_key.values())  # one key, one partition
    # and it reads back through the source
    with source(bs, topic, client, kafka_group()) as src:
        batches = drain(src, 100)
    X = np.vstack([b.X for b in batches])
    assert sorted(X[:, 0]) == list(range(100)) and np.array_equal(X[:, 1], 2 * X[:, 0])
    assert {m["key"] for b in batches for m in b.meta} == {f"u{i}" for i in range(5)}


def test_sink_callable_key_and_custom_encoder(kafka_broker, kafka_topic, client):
    bs = kafka_broker.bootstrap_servers
    topic = kafka_topic(1)
    with KafkaSink(topic, bs, key=lambda r: r["k"] * 2, encoder=lambda r: str(r["v"]).encode(),
                   client=client) as sink:
        sink.write([{"k": "x", "v": 1}, {"k": "y", "v": 2}])
    msgs = read_topic(bs, topic, 2)
    assert [(m.key, m.value) for m in msgs] == [(b"xx", b"1"), (b"yy", b"2")]


def test_sink_flush_reports_failed_deliveries(kafka_broker, kafka_topic, client):
    bs = kafka_broker.bootstrap_servers
    topic = kafka_topic(1)
    limit = {"kafka-python": {"max_request_size": 2000}, "confluent": {"message_max_bytes": 2000}}[client]
    sink = KafkaSink(topic, bs, client=client, **limit)
    try:
        sink.write([{"i": 0}, {"i": 1, "blob": "x" * 5000}, {"i": 2}])  # nothing raised before flush
        with pytest.raises(ConnectorError,
                           match=r"failed to deliver 1 record.*record 1: .*(MessageSizeTooLarge|MSG_SIZE_TOO_LARGE)"):
            sink.flush()
        assert sink.position() == {"delivered": 2}
        sink.write_columns({"i": np.array([3])})  # the sink goes on after a failure
        sink.flush()
        assert sink.position() == {"delivered": 3}
    finally:
        sink.close()
    values = sorted(json.loads(m.value)["i"] for m in read_topic(bs, topic, 3))
    assert values == [0, 2, 3]


def test_sink_refusals_anywhere_in_a_batch(kafka_broker, kafka_topic, client):
    """A batch is handed to the client in one C-level loop; a record refused at once (too large) at
    the start, middle or end of it is reported with its own index, and every other record goes out
    once, in order."""
    bs = kafka_broker.bootstrap_servers
    topic = kafka_topic(1)
    limit = {"kafka-python": {"max_request_size": 2000}, "confluent": {"message_max_bytes": 2000}}[client]
    big = {0, 1, 17, 18, 39}
    with KafkaSink(topic, bs, client=client, key="k", **limit) as sink:
        blob = np.array(["x" * 5000 if i in big else "" for i in range(40)], dtype=object)
        keys = np.array([f"k{i}" for i in range(40)], dtype=object)
        sink.write_columns({"i": np.arange(40), "k": keys, "blob": blob})
        with pytest.raises(ConnectorError, match=r"failed to deliver 5 record") as info:
            sink.flush()
        assert [int(i) for i in re.findall(r"record (\d+):", str(info.value))] == sorted(big)
        assert sink.position() == {"delivered": 35}
    msgs = read_topic(bs, topic, 35)
    assert [json.loads(m.value)["i"] for m in msgs] == [i for i in range(40) if i not in big]
    assert all(m.key == f"k{json.loads(m.value)['i']}".encode() for m in msgs)  # keys stay with their records


def test_kafka_python_sink_batches_by_default_and_user_settings_win(kafka_broker, kafka_topic):
    bs = kafka_broker.bootstrap_servers
    topic = kafka_topic(1)
    with KafkaSink(topic, bs, client="kafka-python") as sink:
        config = sink._make_producer().config
        assert (config["linger_ms"], config["batch_size"]) == (5, 256 * 1024)
    with KafkaSink(topic, bs, client="kafka-python", linger_ms=0, batch_size=1000) as sink:
        config = sink._make_producer().config
        assert (config["linger_ms"], config["batch_size"]) == (0, 1000)
        assert (config["enable_idempotence"], config["acks"]) == (True, -1)


def test_confluent_sink_waits_out_a_full_local_queue(kafka_broker, kafka_topic):
    """librdkafka's queue holds 7 messages here, so ``produce`` raises BufferError many times within
    one batch: the sink lets deliveries drain the queue and goes on from the record that was refused,
    so each record is written exactly once, in order."""
    if os.environ.get("CI") != "true":
        pytest.importorskip("confluent_kafka")
    bs = kafka_broker.bootstrap_servers
    topic = kafka_topic(1)
    with KafkaSink(topic, bs, client="confluent", queue_buffering_max_messages=7) as sink:
        sink.write_columns({"i": np.arange(300)})
        sink.flush()
        assert sink.position() == {"delivered": 300}
    values = [json.loads(m.value)["i"] for m in read_topic(bs, topic, 300)]
    assert values == list(range(300))


# ---------------------------------------------------------------------- settings
def test_unknown_and_forbidden_settings_rejected(kafka_broker, kafka_topic, client):
    bs = kafka_broker.bootstrap_servers
    topic = kafka_topic(1)
    dec = JSONDecoder(FIELDS)
    unknown = {"kafka-python": r"unknown KafkaConsumer setting\(s\) \['bogus_setting'\]",
               "confluent": r"invalid confluent-kafka Consumer settings: .*bogus\.setting"}[client]
    with pytest.raises(KafkaConfigError, match=unknown):
        KafkaSource(topic, bs, "g", dec, client=client, bogus_setting=1)
    with pytest.raises(KafkaConfigError, match="enable_auto_commit must be False.*got True"):
        KafkaSource(topic, bs, "g", dec, client=client, enable_auto_commit=True)
    reserved = {"kafka-python": "value_deserializer", "confluent": "on_commit"}[client]
    with pytest.raises(KafkaConfigError, match=f"'{reserved}' cannot be given"):
        KafkaSource(topic, bs, "g", dec, client=client, **{reserved: bytes})
    unknown = {"kafka-python": r"unknown KafkaProducer setting\(s\) \['lingr_ms'\]",
               "confluent": r"invalid confluent-kafka Producer settings: .*lingr\.ms"}[client]
    with pytest.raises(KafkaConfigError, match=unknown):
        KafkaSink(topic, bs, client=client, lingr_ms=5)
    with pytest.raises(KafkaConfigError, match="acks='all'.*got acks=1"):
        KafkaSink(topic, bs, client=client, acks=1)
    with pytest.raises(KafkaConfigError, match="enable_idempotence=True"):
        KafkaSink(topic, bs, client=client, enable_idempotence=False)
    with pytest.raises(ValueError, match="topics must be"):
        KafkaSource([], bs, "g", dec, client=client)
    with pytest.raises(KafkaConfigError, match=r"client must be one of \['confluent', 'kafka-python'\]"):
        KafkaSource(topic, bs, "g", dec, client="librdkafka")
    # security settings pass straight through to the client
    if client == "kafka-python":
        _check_settings({"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                         "sasl_plain_username": "u", "sasl_plain_password": "p", "ssl_cafile": "/ca.pem"},
                        KafkaConsumer.DEFAULT_CONFIG, {}, "KafkaConsumer")
    with KafkaSource(topic, bs, "g", dec, client=client, security_protocol="PLAINTEXT", client_id="x",
                     **KAFKA_GROUP_SETTINGS) as src:
        assert src.client_name == client and isinstance(src, KafkaSource)
        assert src.read(10, timeout=0.2).status == "idle"


# ---------------------------------------------------------------------- columns, clients
class _CarryingDecoder:
    """JSONDecoder plus ``decode_columns`` carrying the id field (a fake in addition to the real one)."""

    def __init__(self) -> None:
        self.inner, self.calls = JSONDecoder(FIELDS), []
        self.n_features, self.feature_names = 2, FIELDS

    def decode_many(self, raws):  # pragma: no cover - the source must prefer decode_columns
        raise AssertionError("decode_columns should have been used")

    def decode_columns(self, raws):
        self.calls.append(len(raws))
        X, good, bad = self.inner.decode_many(raws)
        ids = np.array([json.loads(raws[i])["id"] for i in good], dtype=np.int64)
        return X, good, bad, {"id": ids}


def test_batches_are_columns_from_one_decode_per_poll(kafka_broker, kafka_topic, client):
    bs = kafka_broker.bootstrap_servers
    topic = kafka_topic(2)
    raws, bad = make_events(300)
    produce(bs, topic, raws, partitions=2, keys=[f"k{i}".encode() for i in range(300)])
    decoder = _CarryingDecoder()
    src = KafkaSource(topic, bs, None, decoder, client=client)
    try:
        batches = drain(src, 300, max_records=128)
    finally:
        src.close()
    assert len(decoder.calls) == len(batches) and sum(decoder.calls) == 300  # one decode per poll
    for b in batches:
        cols = b.columns
        assert list(cols) == ["source", "topic", "partition", "offset", "key", "id"]
        assert cols["partition"].dtype == np.int64 and cols["offset"].dtype == np.int64
        assert cols["key"].dtype == object and cols["source"].dtype == object
        assert all(len(c) == b.X.shape[0] for c in cols.values())
        ids = cols["id"]
        np.testing.assert_array_equal(b.X[:, 0], ids)  # rows and columns stay aligned
        np.testing.assert_array_equal(cols["partition"], ids % 2)
        np.testing.assert_array_equal(cols["offset"], ids // 2)
        assert cols["key"].tolist() == [f"k{i}" for i in ids.tolist()]
        assert set(cols["topic"].tolist()) <= {topic} and set(cols["source"].tolist()) == {f"kafka:{topic}"}
        for r in b.rejects:
            assert r.meta == {"source": f"kafka:{topic}", "topic": topic, "partition": r.meta["partition"],
                              "offset": r.meta["offset"], "key": f"k{r.meta['offset'] * 2 + r.meta['partition']}"}
    seen = sorted(i for b in batches for i in b.columns["id"].tolist())
    assert seen == sorted(set(range(300)) - set(bad))


def test_sink_write_columns_round_trip(kafka_broker, kafka_topic, client):
    bs = kafka_broker.bootstrap_servers
    topic = kafka_topic(3)
    n = 50
    users = np.empty(n, dtype=object)
    users[:] = [f"u{i % 4}" for i in range(n)]
    columns = {
        "user": users,
        "score": np.where(np.arange(n) % 10 == 0, np.nan, np.arange(n) / 4),
        "offset": np.arange(n, dtype=np.int64),
        "x": np.arange(2 * n, dtype=np.float64).reshape(n, 2),
        "resp": DictColumn(np.full((n, 2), 0.5), ["c0", "c1"]),
    }
    with KafkaSink(topic, bs, key="user", client=client) as sink:
        sink.write_columns(columns)
        sink.flush()
        assert sink.position() == {"delivered": n}
    msgs = read_topic(bs, topic, n)
    assert len(msgs) == n
    by_key: dict[str, set[int]] = {}
    for m in msgs:
        rec = json.loads(m.value)  # strict JSON: NaN became null
        i = rec["offset"]
        assert list(rec) == ["user", "score", "offset", "x", "resp"]
        assert rec == {"user": f"u{i % 4}", "score": None if i % 10 == 0 else i / 4, "offset": i,
                       "x": [2.0 * i, 2.0 * i + 1], "resp": {"c0": 0.5, "c1": 0.5}}
        assert m.key == rec["user"].encode()
        by_key.setdefault(rec["user"], set()).add(m.partition)
    assert all(len(p) == 1 for p in by_key.values())


def test_both_clients_put_a_key_on_the_same_partition(kafka_broker, kafka_topic):
    bs = kafka_broker.bootstrap_servers
    keys = np.empty(40, dtype=object)
    keys[:] = [f"user-{i}" for i in range(40)]
    placed = {}
    for client in CLIENTS:
        topic = kafka_topic(3)
        with KafkaSink(topic, bs, key="k", client=client) as sink:
            sink.write_columns({"k": keys})
        placed[client] = {m.key: m.partition for m in read_topic(bs, topic, 40)}
    assert len(placed["confluent"]) == 40 and len(set(placed["confluent"].values())) == 3
    assert placed["confluent"] == placed["kafka-python"]


def test_default_client_and_fallback_without_confluent(monkeypatch):
    import sys

    from connectors.kafka import _common

    assert resolve_client(None) == "confluent" == DEFAULT_CLIENT
    assert resolve_client("kafka-python") == "kafka-python"
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # as if not installed
    monkeypatch.setattr(_common, "_warned_fallback", False)
    with pytest.warns(RuntimeWarning, match=r"confluent-kafka is not installed.*kafka-python.*kafka-fast"):
        assert resolve_client(None) == "kafka-python"
    with pytest.raises(KafkaConfigError, match=r"client='confluent' needs confluent-kafka.*kafka-fast"):
        resolve_client("confluent")


def test_kafka_python_checks_crc_in_c():
    from connectors.kafka._kafka_python import crc_is_native

    assert crc_is_native(), "the crc32c package (kafka-fast and test extras) is not picked up by kafka-python"


def test_config_selects_the_client(kafka_broker, kafka_topic, client):
    from online_gmm.config import build_sink, build_source, parse_config

    bs, topic = kafka_broker.bootstrap_servers, kafka_topic(1)
    cfg = parse_config({"source": {"type": "kafka", "topics": topic, "bootstrap_servers": bs, "group_id": "g",
                                   "fields": FIELDS, "client": client, "settings": KAFKA_GROUP_SETTINGS},
                        "sinks": {"scores": {"type": "kafka", "topic": topic, "bootstrap_servers": bs,
                                             "client": client}}})
    src, sink = build_source(cfg["source"]), build_sink(cfg["sinks"]["scores"])
    try:
        assert (src.client_name, sink.client_name) == (client, client)
    finally:
        src.close()
        sink.close()


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_group_offsets_commit_without_joining_and_are_refused_while_a_member_is_active(
        kafka_broker, kafka_topic, kafka_group, client):
    """What a scaled-out coordinator does with ``[source] group_id``: commit the checkpointed offsets
    to the group without joining it; another client of the group then reads them. A group with an
    active member refuses such commits (the job stops with the broker's reason)."""
    from connectors.kafka._offsets import GroupOffsets

    servers = kafka_broker.bootstrap_servers
    topic = kafka_topic(partitions=2, prefix="offsets")
    group = kafka_group()
    offsets = GroupOffsets(servers, group, client=client)
    try:
        offsets.commit({topic: {"0": 7, "1": 3}})
        assert offsets.committed([(topic, 0), (topic, 1)]) == {(topic, 0): 7, (topic, 1): 3}
    finally:
        offsets.close()
    reader = KafkaConsumer(bootstrap_servers=servers, group_id=group, enable_auto_commit=False)
    try:
        assert reader.committed(TopicPartition(topic, 0)) == 7
    finally:
        reader.close()

    busy = kafka_group()
    member = KafkaConsumer(topic, bootstrap_servers=servers, group_id=busy, enable_auto_commit=False,
                           **KAFKA_GROUP_SETTINGS)
    try:
        deadline = time.monotonic() + 30
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(200)
        assert member.assignment(), "the member never joined its group"
        offsets = GroupOffsets(servers, busy, client=client)
        try:
            with pytest.raises(ConnectorError, match=f"could not commit offsets .* to group '{busy}'"):
                offsets.commit({topic: {"0": 5}})
        finally:
            offsets.close()
    finally:
        member.close()
