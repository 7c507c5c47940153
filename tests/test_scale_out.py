"""Scale-out: one model learned by Dask workers in rounds, on a real LocalCluster and the real broker.

A 4-partition topic with bad records mixed in, 2 worker processes on 127.0.0.1. The reference is an
uninterrupted 2-worker run; a stopped-and-resumed run, a run whose worker is SIGKILLed and a run whose
coordinator (with its workers) is SIGKILLed must all end with its model bit for bit and its score
files byte for byte, every record counted once.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from online_gmm.config import load_config  # noqa: E402
from online_gmm.demo import DEMO_FIELDS, generate_events  # noqa: E402
from online_gmm.pipeline import load_model  # noqa: E402
from online_gmm.scale_out import ScaleOutPipeline  # noqa: E402

from _procs import ROOT  # noqa: E402

PARTITIONS = 4
N = 4000
ROUND = 250          # good records per partition per round: 4 rounds


@pytest.fixture(scope="module")
def client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address=None,
                                           memory_limit=int(600e6))
    c = distributed.Client(cluster, set_as_default=False)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture(scope="module")
def stream(kafka_broker):
    """The topic (4 partitions, records spread by key) and the generator's truth."""
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic
    servers = kafka_broker.bootstrap_servers
    topic = f"scale-{os.getpid()}-{time.monotonic_ns()}"
    admin = KafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=10000)
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    admin.close()
    lines, truth = generate_events(N, seed=11, bad_rate=0.01)
    producer = KafkaProducer(bootstrap_servers=servers, linger_ms=20)
    for i, line in enumerate(lines):
        producer.send(topic, line, partition=i % PARTITIONS)
    producer.flush()
    producer.close()
    return servers, topic, truth


def _config(tmp: Path, servers: str, topic: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "job.toml"
    path.write_text(f"""
[source]
type = "kafka"
topics = "{topic}"
bootstrap_servers = "{servers}"
group_id = "scale-{tmp.name}"
fields = {json.dumps(DEMO_FIELDS)}
max_idle_s = 1.5

[model]
n_components = 3
warm_up = 600
random_state = 0

[anomaly]
min_samples = 200

[refit]
every = 2000
candidates = [2, 3, 4]
reservoir_size = 1000
n_init = 1

[checkpoint]
directory = "ck"
every = 1000

[cluster]
workers = 2
round_size = {ROUND}

[sinks.scores]
type = "jsonl"
path = "out/scores.jsonl"

[sinks.anomalies]
type = "kafka"
topic = "anomalies-{tmp.name}"
bootstrap_servers = "{servers}"

[sinks.dead_letters]
type = "jsonl"
path = "out/dead.jsonl"
""")
    return path


def _run(tmp: Path, client, observer=None, **kw):
    job = ScaleOutPipeline(load_config(tmp / "job.toml"), client=client)
    if observer is not None:
        job.observers.append(observer)
    try:
        return job.run(**kw), job
    finally:
        job.close()


def _final(tmp: Path):
    _, meta, parts = load_model(str(tmp / "ck"))
    return parts["model"][0], meta


def _outputs(tmp: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((tmp / "out").glob("*.jsonl"))}


def _assert_same_job(tmp: Path, ref: Path) -> None:
    arrays, meta = _final(tmp)
    ref_arrays, ref_meta = _final(ref)
    assert meta["counters"] == {**ref_meta["counters"], "checkpoints": meta["counters"]["checkpoints"]}
    assert sorted(arrays) == sorted(ref_arrays)
    for key in ref_arrays:
        np.testing.assert_array_equal(arrays[key], ref_arrays[key], err_msg=key)
    assert _outputs(tmp) == _outputs(ref)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, client, stream):
    """The uninterrupted 2-worker run."""
    servers, topic, truth = stream
    tmp = tmp_path_factory.mktemp("reference")
    _config(tmp, servers, topic)
    events = []
    summary, job = _run(tmp, client, observer=lambda event, fields: events.append((event, fields)))
    job.events = events
    return tmp, summary, job, truth


def _topic_values(servers: str, topic: str) -> list[bytes]:
    """Every value in ``topic``, read up to the end offsets it has now."""
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        end = sum(consumer.end_offsets(tps).values())
        values: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(values) < end and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values += [r.value for r in records]
        return values
    finally:
        consumer.close()


def test_every_record_is_counted_once(reference, stream):
    tmp, summary, job, truth = reference
    n_bad = int(truth["bad"].sum())
    assert summary.records == N and summary.good + summary.rejected == N
    assert summary.rejected == n_bad > 0
    scores = [json.loads(line) for p in sorted((tmp / "out").glob("scores.part-*.jsonl"))
              for line in p.read_text().splitlines()]
    dead = [json.loads(line) for p in sorted((tmp / "out").glob("dead.part-*.jsonl"))
            for line in p.read_text().splitlines()]
    keys = {(r["partition"], r["offset"]) for r in scores}
    assert len(scores) == len(keys) == N - n_bad
    assert len(dead) == n_bad and all(d["reason"] for d in dead)
    assert len({r["partition"] for r in scores}) == PARTITIONS
    # each partition's file holds its records in offset order, and only its own partition
    for p in sorted((tmp / "out").glob("scores.part-*.jsonl")):
        rows = [json.loads(line) for line in p.read_text().splitlines()]
        assert len({r["partition"] for r in rows}) == 1
        assert [r["offset"] for r in rows] == sorted(r["offset"] for r in rows)
    flagged = sum(r["anomaly"] for r in scores)
    assert flagged == summary.anomalies > 0
    # the Kafka sink, shared by the partitions: each flagged record once in an uninterrupted run
    produced = [json.loads(v) for v in _topic_values(stream[0], f"anomalies-{tmp.name}")]
    assert len(produced) == flagged
    assert {(r["partition"], r["offset"]) for r in produced} == \
        {(r["partition"], r["offset"]) for r in scores if r["anomaly"]}
    _, meta = _final(tmp)
    assert meta["parts"]["parts"]["model"]["n_seen"] == summary.learned == N - n_bad
    assert summary.refits == 1 and summary.extra["skipped_updates"] == 0
    # the workers read without a group; the coordinator committed the checkpointed positions to
    # [source] group_id: every partition's end, as a one-process pipeline's group would hold
    from connectors.kafka._common import _parse_position
    from connectors.kafka._offsets import GroupOffsets
    checkpointed = {}
    for q in meta["partitions"]:
        checkpointed.update(_parse_position(q["source"]))
    assert len(checkpointed) == PARTITIONS and sum(checkpointed.values()) == N
    group = GroupOffsets(stream[0], f"scale-{tmp.name}", client="kafka-python")
    try:
        assert group.committed(sorted(checkpointed)) == checkpointed
    finally:
        group.close()


def test_observers_metrics_and_report_see_the_whole_job(reference):
    """The events the metrics and JSON logs are built from, one "batch" per round, add up to the
    job's counters; the lag of every partition is known; the report reads the checkpoint."""
    from online_gmm.report import load_view
    tmp, summary, job, _ = reference
    batches = [f for e, f in job.events if e == "batch"]
    assert len(batches) == summary.extra["rounds"]
    for key, counter in (("records", "records"), ("good", "good"), ("rejected", "rejected"),
                         ("flagged", "anomalies"), ("learned", "learned")):
        assert sum(b[key] for b in batches) == getattr(summary, counter), key
    assert sum(len(b["reasons"]) + b["refused"] for b in batches) == summary.rejected
    assert [e for e, _ in job.events].count("refit") == summary.refits
    assert [e for e, _ in job.events].count("checkpoint") == summary.checkpoints
    assert sorted(job.source.lag()) == [(job.parts[0]["identity"].split(":")[1].split("/")[0], p)
                                        for p in range(PARTITIONS)]
    assert all(n == 0 for n in job.source.lag().values())      # read to the end
    view, meta = load_view(tmp / "ck")
    # what the report draws (drawing itself is tested with the one-process job's report)
    assert len(view.sample) == 1000 and sum(meta["timeline"]["entries"]["records"]) == N
    assert len(view.flagged) == min(summary.anomalies, 300)


def test_the_model_is_close_to_a_one_process_run(reference):
    """The same records, in the order they were produced, through the one-process pipeline (a file:
    a Kafka consumer of 4 partitions reads them in bursts per partition, another stream). The
    scaled-out job learns one update per round of 4 x 250 records taken partition by partition and
    flags against the threshold of the round's start; the one-process job one update per batch of
    1000 in produced order. Both must describe held-out data equally well: within 0.05 nats per
    record (measured: 0.0005)."""
    from online_gmm.cli import build_pipeline
    tmp, summary, job, truth = reference
    one = tmp.parent / (tmp.name + "-one")
    one.mkdir()
    lines, _ = generate_events(N, seed=11, bad_rate=0.01)
    (one / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    cfg = load_config(_config(one, "unused:1", "unused"))
    cfg["source"] = {**cfg["source"], "type": "jsonl", "path": str(one / "events.jsonl")}
    del cfg["sinks"]["anomalies"]
    cfg["pipeline"]["batch_size"] = PARTITIONS * ROUND
    cfg["cluster"]["workers"] = 0
    pipe = build_pipeline(cfg)
    try:
        ref = pipe.run()
    finally:
        pipe.close()
    assert (ref.records, ref.good, ref.rejected) == (summary.records, summary.good, summary.rejected)
    held, _ = generate_events(4000, seed=12, bad_rate=0.0, anomaly_rate=0.0)
    X = np.array([[json.loads(line)["metrics"][f.split(".")[1]] for f in DEMO_FIELDS] for line in held])
    a, b = job.fitted_model().score(X), pipe.fitted_model().score(X)
    assert abs(a - b) < 0.05, (a, b)        # nats per record
    assert job.online.n_components == pipe.online.n_components


def test_a_stopped_and_resumed_job_ends_bit_for_bit_like_the_uninterrupted_one(reference, client, stream):
    servers, topic, _ = stream
    tmp = reference[0].parent / (reference[0].name + "-resumed")
    _config(tmp, servers, topic)
    first, _ = _run(tmp, client, max_records=N // 3)
    assert first.records < N
    second, _ = _run(tmp, client)
    assert second.resumed_from is not None
    _assert_same_job(tmp, reference[0])


def test_a_killed_worker_is_replaced_and_its_round_redone(reference, client, stream):
    servers, topic, _ = stream
    tmp = reference[0].parent / (reference[0].name + "-worker-kill")
    _config(tmp, servers, topic)
    killed = []

    def kill_when_writing(path: Path, size: int, pid: int) -> None:
        # mid-round: as soon as the worker's task has written to its partition's scores
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and path.stat().st_size == size:
            time.sleep(0.001)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    def progress(summary):
        if summary.extra["rounds"] == 2 and not killed:
            pids = client.run(os.getpid)
            victim = sorted(pids)[0]                 # the worker partition 0 is given to
            path = tmp / "out" / "scores.part-0000.jsonl"
            threading.Thread(target=kill_when_writing, args=(path, path.stat().st_size, pids[victim]),
                             daemon=True).start()

    summary, _ = _run(tmp, client, progress=progress)
    client.wait_for_workers(2, timeout=60)
    assert killed, "no worker was killed: the test lost its point"
    assert summary.records == N
    _assert_same_job(tmp, reference[0])


def test_a_killed_coordinator_resumes_with_nothing_lost_or_doubled(reference, client, stream):
    servers, topic, _ = stream
    tmp = reference[0].parent / (reference[0].name + "-coordinator-kill")
    cfg = _config(tmp, servers, topic)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "online_gmm.cli", "run", "--config", str(cfg), "--log-format", "json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    ck = tmp / "ck"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not list(ck.glob("ckpt-*.npz")):
        time.sleep(0.01)
    assert proc.poll() is None, "the job finished before it could be killed: " + proc.stderr.read().decode()
    os.killpg(proc.pid, signal.SIGKILL)       # the coordinator and its local workers, all at once
    _, err = proc.communicate(timeout=60)
    logged = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert logged and logged[0]["event"] == "start"
    _, meta = _final(tmp)
    assert meta["counters"]["records"] < N
    summary, _ = _run(tmp, client)         # resumed on the module's cluster (saves a start-up)
    assert summary.resumed_from is not None
    _assert_same_job(tmp, reference[0])


def test_command_line_mistakes_with_workers_are_one_line_and_exit_2(tmp_path):
    from _procs import run_cli
    (tmp_path / "events.jsonl").write_text('{"a": 1}\n')
    cfg = tmp_path / "job.toml"
    cfg.write_text(f"""
[source]
type = "jsonl"
path = "{tmp_path / 'events.jsonl'}"
fields = ["a"]
[refit]
mode = "window"
[sinks.scores]
type = "jsonl"
path = "{tmp_path / 'scores.jsonl'}"
""")
    for args, needle in ((["--workers", "2"], "[refit] mode must be 'reservoir' with workers"),
                         (["--workers", "0"], "--workers")):
        proc = run_cli("run", "--config", str(cfg), *args)
        out, err = proc.communicate(timeout=120)
        lines = err.decode().strip().splitlines()
        assert proc.returncode == 2, err.decode()
        assert needle in err.decode() and "Traceback" not in err.decode()
        assert len([line for line in lines if line.startswith("Error")]) == 1
    assert not list(tmp_path.glob("scores*"))      # nothing created by a refused start


def test_a_stop_abandons_the_waiting_round_and_the_job_resumes_from_the_complete_ones(reference, client,
                                                                                      stream):
    """Without max_idle_s the last round waits for records that never come (each partition holds
    fewer than 4 x 250 good records); a stop (what SIGTERM does) abandons it, puts back what its
    tasks wrote, and checkpoints the complete rounds. Resumed, the job ends as the uninterrupted run."""
    servers, topic, _ = stream
    tmp = reference[0].parent / (reference[0].name + "-stopped")
    path = _config(tmp, servers, topic)
    text = path.read_text()
    path.write_text(text.replace("max_idle_s = 1.5\n", ""))
    job = ScaleOutPipeline(load_config(path), client=client)
    last = N // (PARTITIONS * ROUND) - 1            # the round that cannot be completed

    def stop_when_waiting():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(f"-r{last}-" in str(key) for keys in client.processing().values() for key in keys):
                break
            time.sleep(0.01)
        job.stop()

    def progress(summary):
        if summary.extra["rounds"] == last:
            threading.Thread(target=stop_when_waiting, daemon=True).start()

    try:
        summary = job.run(progress=progress)
    finally:
        job.close()
    assert summary.extra["rounds"] == last and summary.records < N
    _, meta = _final(tmp)
    assert meta["counters"]["records"] == summary.records
    path.write_text(text)
    resumed, _ = _run(tmp, client)
    assert resumed.resumed_from is not None
    _assert_same_job(tmp, reference[0])


def test_a_collapsed_component_is_reseeded_at_a_record_of_the_round(tmp_path, client):
    """The one-process pipeline re-seeds a component whose weight fell below ``min_weight`` at a
    poorly explained record of its batch; the coordinator has no batch (its records stay on the
    workers) and uses the round's sample candidates, records drawn uniformly on the workers."""
    rng = np.random.default_rng(3)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    for part in range(2):
        first = centres[rng.integers(0, 3, 1200)] + rng.normal(size=(1200, 2))
        later = centres[rng.integers(0, 2, 1800)] + rng.normal(size=(1800, 2))  # (0, 10) stops
        with open(tmp_path / f"events-{part}.jsonl", "w") as fh:
            for x, y in np.vstack([first, later]).tolist():
                fh.write(json.dumps({"x": x, "y": y}) + "\n")
    (tmp_path / "job.toml").write_text(f"""
[source]
type = "jsonl"
path = "{tmp_path / 'events-*.jsonl'}"
fields = ["x", "y"]

[model]
n_components = 3
warm_up = 600
random_state = 0
halflife = 300
min_weight = 0.15

[refit]
every = 0

[checkpoint]
directory = "{tmp_path / 'ck'}"
every = 1000

[cluster]
round_size = 200

[sinks.scores]
type = "jsonl"
path = "{tmp_path / 'out' / 'scores.jsonl'}"
""")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary, job = _run(tmp_path, client)
    assert summary.good == 6000
    reseeds = job._online.reseeds
    assert reseeds, "the component of the cluster that stopped was never re-seeded"
    assert any("re-seeded" in str(w.message) for w in caught)
    params = job._online.params
    assert params.is_finite() and np.all(params.weights > 0)
    # every component ends on data that still arrives: none is left on the vanished cluster
    later = np.array([[0.0, 0.0], [10.0, 0.0]])
    assert np.min(np.linalg.norm(params.means[:, None, :] - later[None], axis=2), axis=1).max() < 5.0
    _, meta = _final(tmp_path)
    assert meta["parts"]["parts"]["model"]["reseeds"] == [list(r) for r in reseeds]
