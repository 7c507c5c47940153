"""Watching a running job: Prometheus metrics scraped from a real `online-gmm run`, its JSON logs,
and the report of its checkpoint (one run serves every assertion)."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from online_gmm.cli import main
from online_gmm.demo import DEMO_FIELDS, generate_events

from _procs import run_cli

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

BATCH = 200
EVERY = 1000        # checkpoint cadence: the file ends on a checkpoint


class _Lines:
    """Collects a pipe's lines in a thread, so a test can wait for one (with a deadline)."""

    def __init__(self, pipe) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe) -> None:
        for raw in iter(pipe.readline, b""):
            with self._cond:
                self.lines.append(raw.decode().rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append(None)        # end of the stream
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = 120.0):
        """The first line for which ``predicate`` is true; fails at the deadline or at the end."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                while seen < len(self.lines):
                    line = self.lines[seen]
                    seen += 1
                    if line is None:
                        pytest.fail("the process ended first:\n" + "\n".join(self.lines[:-1]))
                    if predicate(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail("no such line within the deadline:\n" + "\n".join(self.lines))
                self._cond.wait(left)

    def all(self) -> list[str]:
        self._thread.join(timeout=60)
        return [line for line in self.lines if line is not None]


def _stream(path: Path, n: int = 3600, seed: int = 5) -> int:
    """The demo's events cut after the good record that completes a checkpoint's worth of batches
    (so the job writes a checkpoint after its last record); returns the number of lines written."""
    lines, truth = generate_events(n, seed=seed, bad_rate=0.02)
    good_at = np.flatnonzero(~truth["bad"])
    cut = int(good_at[(len(good_at) // EVERY) * EVERY - 1]) + 1
    path.write_bytes(b"\n".join(lines[:cut]) + b"\n")
    return cut


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _get(samples, name: str, **labels) -> float:
    return samples[(name, tuple(sorted((k, str(v)) for k, v in labels.items())))]


@pytest.fixture(scope="module")
def watched_run(tmp_path_factory):
    """`online-gmm run --metrics-port 0 --log-format json` on a followed JSON lines file: scraped
    once every record was counted, then stopped with SIGTERM."""
    tmp = tmp_path_factory.mktemp("watch")
    n_lines = _stream(tmp / "events.jsonl")
    cfg = tmp / "job.toml"
    cfg.write_text(f"""
[source]
type = "jsonl"
path = "events.jsonl"
fields = {json.dumps(DEMO_FIELDS)}
follow = true
timeout = 0.2

[model]
n_components = 3
warm_up = 600
random_state = 0

[pipeline]
batch_size = {BATCH}

[anomaly]
quantile = 0.98
policy = "protect"

[refit]
every = 1000
candidates = [2, 3, 4]
reservoir_size = 1500
n_init = 1

[checkpoint]
directory = "ck"
every = {EVERY}

[sinks.scores]
type = "jsonl"
path = "scores.jsonl"

[sinks.dead_letters]
type = "jsonl"
path = "dead.jsonl"
""")
    proc = run_cli("run", "--config", str(cfg), "--metrics-port", "0", "--log-format", "json")
    try:
        err = _Lines(proc.stderr)
        start = json.loads(err.wait_for(lambda l: '"event": "start"' in l))
        url = start["metrics"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url), url
        # the checkpoint after the file's last record (the metrics are updated before it is logged);
        # then the job waits for more lines (follow mode) while it is scraped
        err.wait_for(lambda l: '"event": "checkpoint"' in l
                     and json.loads(l)["counters"]["records"] == n_lines)
        samples = _scrape(url)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)      # stderr is read by its thread; stdout is a few lines
        out = proc.stdout.read()
        logs = err.all()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, "\n".join(logs)
    return {"tmp": tmp, "n_lines": n_lines, "samples": samples, "stdout": out.decode(), "logs": logs,
            "url": url}


def _summary(stdout: str) -> dict[str, int]:
    line = next(l for l in stdout.splitlines() if l.startswith("records "))
    return {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", line)}


def test_metrics_scraped_from_a_running_job_match_its_summary(watched_run):
    s, summary = watched_run["samples"], _summary(watched_run["stdout"])
    assert summary["records"] == watched_run["n_lines"]
    assert _get(s, "online_gmm_records_total", status="read") == summary["records"]
    assert _get(s, "online_gmm_records_total", status="good") == summary["good"]
    assert _get(s, "online_gmm_records_total", status="rejected") == summary["rejected"] > 0
    assert _get(s, "online_gmm_records_total", status="learned") == summary["learned"]
    assert _get(s, "online_gmm_records_total", status="flagged") == summary["anomalies"] > 0
    assert _get(s, "online_gmm_refits_total") == summary["refits"] > 0
    # SIGTERM wrote one more checkpoint after the scrape
    assert _get(s, "online_gmm_checkpoints_total") == summary["checkpoints"] - 1 > 0
    assert _get(s, "online_gmm_components") == summary["K"]
    # rejected records by reason class: they add up, and the demo's bad lines fall in named classes
    reasons = {dict(k[1])["reason"]: v for k, v in s.items() if k[0] == "online_gmm_rejected_records_total"}
    assert sum(reasons.values()) == summary["rejected"]
    assert reasons["other"] == 0 and reasons["malformed"] > 0 and reasons["missing"] > 0
    dead = [json.loads(l) for l in (watched_run["tmp"] / "dead.jsonl").read_text().splitlines()]
    assert len(dead) == summary["rejected"]
    stop = json.loads(watched_run["logs"][-1])
    batches = stop["counters"]["batches"]
    assert _get(s, "online_gmm_batches_total") == batches
    assert _get(s, "online_gmm_batch_duration_seconds_count") == batches
    assert 0 < _get(s, "online_gmm_batch_duration_seconds_sum") < 60
    assert np.isfinite(_get(s, "online_gmm_anomaly_threshold"))
    assert -50 < _get(s, "online_gmm_batch_mean_log_likelihood") < 50
    assert 0 <= _get(s, "online_gmm_seconds_since_last_checkpoint") < 120
    assert _get(s, "online_gmm_last_checkpoint_timestamp_seconds") > time.time() - 600
    assert not any(k[0] == "online_gmm_kafka_consumer_lag" for k in s)   # a file has no lag


def test_json_logs_are_one_event_per_line(watched_run):
    events = [json.loads(line) for line in watched_run["logs"]]     # every line is one JSON object
    names = [e["event"] for e in events]
    assert names[0] == "start" and names[-1] == "stop"
    assert {"refit", "checkpoint", "rejected"} <= set(names)
    summary = _summary(watched_run["stdout"])
    refits = [e for e in events if e["event"] == "refit"]
    assert len(refits) == summary["refits"]
    assert {c["k"] for c in refits[0]["row"]["candidates"]} == {2, 3, 4}
    assert refits[0]["row"]["chosen_k"] in (2, 3, 4) and refits[0]["gap"] >= 0
    assert sum(e["count"] for e in events if e["event"] == "rejected") == summary["rejected"]
    assert len([e for e in events if e["event"] == "checkpoint"]) == summary["checkpoints"]
    stop = events[-1]
    assert stop["reason"] == "signal" and stop["counters"]["records"] == summary["records"]
    for e in events:
        assert e["level"] in ("info", "warning") and e["time"].endswith("Z")


def test_report_of_the_watched_job(watched_run, tmp_path):
    """The report of a checkpoint holds the timeline (kept across the SIGTERM's checkpoint), the
    pictures as inline SVG, and nothing that loads from elsewhere."""
    ck = watched_run["tmp"] / "ck"
    runner = CliRunner()
    res = runner.invoke(main, ["report", str(ck), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r.html").read_text()
    assert page.count("<svg") == 4 and "<script" not in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)     # nothing fetched from a network
    assert "metrics.latency_ms" in page and "[refit]" in page
    from online_gmm.report import load_view
    view, _ = load_view(ck)
    summary = _summary(watched_run["stdout"])
    assert view.timeline["records_end"][-1] == summary["records"]
    assert sum(view.timeline["batches"]) == json.loads(watched_run["logs"][-1])["counters"]["batches"]
    assert sum(view.timeline["flagged"]) == summary["anomalies"] and len(view.flagged) > 0


def test_report_mistakes_are_one_line(watched_run, tmp_path):
    ck = watched_run["tmp"] / "ck"
    for args, says in [
        ([str(tmp_path), "--out", str(tmp_path / "r.html")], "cannot load a model from"),
        ([str(ck), "--out", str(tmp_path / "no" / "r.html")], "is not a writable folder"),
        ([str(watched_run["tmp"]), "--out", str(tmp_path / "r.html")], "its folder 'ck' does"),
    ]:
        res = CliRunner().invoke(main, ["report", *args])
        assert res.exit_code == 2 and says in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_metrics_mistakes_are_one_line(tmp_path):
    """A port already taken, or no prometheus-client: one line and exit status 2, no traceback, no
    output left behind; then the same job with a free port names its metrics address and runs."""
    import socket
    import subprocess
    import sys

    from online_gmm.demo import write_events

    write_events(tmp_path / "e.jsonl", n=50, seed=1)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[source]\ntype = "jsonl"\npath = "e.jsonl"\nfields = {json.dumps(DEMO_FIELDS)}\n'
                   '[checkpoint]\ndirectory = "ck"\n[sinks.scores]\ntype = "jsonl"\npath = "s.jsonl"\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = CliRunner().invoke(main, ["run", "--config", str(cfg), "--metrics-port", str(port), "--quiet"])
    assert res.exit_code == 2 and f"cannot serve metrics on 127.0.0.1:{port}" in res.output
    assert not (tmp_path / "s.jsonl").exists() and not (tmp_path / "ck").exists()
    hide = ("import sys; sys.modules['prometheus_client'] = None; from online_gmm.cli import main; "
            "main()")
    proc = subprocess.run([sys.executable, "-c", hide, "run", "--config", str(cfg), "--metrics-port", "0"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        'Error: metrics need prometheus-client: pip install "online-gmm[metrics]"']
    assert not (tmp_path / "s.jsonl").exists() and not (tmp_path / "ck").exists()
    # the human format names the address on stderr (port 0: a free port), then the job runs as usual
    proc = run_cli("run", "--config", str(cfg), "--metrics-port", "0", "--quiet")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert re.fullmatch(r"metrics: http://127\.0\.0\.1:\d+/metrics", err.decode().splitlines()[0])
    assert out.decode().startswith("records 50 ")


def test_kafka_consumer_lag_per_partition(kafka_broker, kafka_topic):
    """A pipeline reading a real topic: the lag gauge is the high-water mark minus the position."""
    from kafka import KafkaProducer
    from prometheus_client import generate_latest

    from connectors.decoders import JSONDecoder
    from connectors.kafka import KafkaSource
    from online_gmm.metrics import JobMetrics
    from online_gmm.model_spec import ModelSpec
    from online_gmm.pipeline import Pipeline

    topic = kafka_topic(partitions=2, prefix="lag")
    lines, _ = generate_events(1200, seed=4, bad_rate=0.0)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, linger_ms=5)
    for i, line in enumerate(lines):
        producer.send(topic, line, partition=i % 2)
    producer.flush()
    producer.close()
    source = KafkaSource(topic, kafka_broker.bootstrap_servers, None, JSONDecoder(DEMO_FIELDS),
                         max_idle_s=2.0)
    pipe = Pipeline(source, ModelSpec(n_components=3, warm_up=300, random_state=0), batch_size=100)
    metrics = JobMetrics(source)
    pipe.observers.append(metrics)
    try:
        pipe.run(max_records=500)
        positions = {int(p): o for p, o in source.position()[topic].items()}
        lag = source.lag()
    finally:
        pipe.close()
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}
    scraped = {(s.labels["topic"], int(s.labels["partition"])): s.value
               for s in families["online_gmm_kafka_consumer_lag"].samples}
    assert scraped and set(scraped) <= {(topic, 0), (topic, 1)}
    assert scraped == {key: float(n) for key, n in lag.items()}
    assert sum(positions.values()) == 500
    # all 600 records of a partition were produced before the first fetch: its high-water mark
    assert all(n == 600 - positions[p] for (_, p), n in scraped.items()), (scraped, positions)
    assert max(scraped.values()) > 0
