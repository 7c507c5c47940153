"""The online-gmm command and the examples, run as a user would (on small data)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from online_gmm.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out, result.output


def test_demo_writes_outputs_summary_and_plot(demo_out):
    out, text = demo_out
    assert "records 20000" in text and "rejected 111" in text
    scores = (out / "scores.jsonl").read_text().splitlines()
    assert len(scores) == 20000 - 111
    dead = [json.loads(l) for l in (out / "dead_letters.jsonl").read_text().splitlines()]
    assert len(dead) == 111 and all(d["reason"] for d in dead)
    anomalies = [json.loads(l) for l in (out / "anomalies.jsonl").read_text().splitlines()]
    assert anomalies and all(a["anomaly"] for a in anomalies)
    assert (out / "demo.png").stat().st_size > 10_000
    assert "BIC history" in text
    # the drift in the demo stream: three clusters, then four
    rows = [l.split() for l in text.split("BIC history:")[1].splitlines()[2:] if l.strip()
            and l.split()[0].isdigit()]
    n_seen = [int(r[1]) for r in rows]
    chosen = [int(r[2]) for r in rows]
    before = [k for n, k in zip(n_seen, chosen) if n <= 10000]
    after = [k for n, k in zip(n_seen, chosen) if n >= 15000]
    assert before.count(3) > len(before) / 2, chosen     # three kinds of traffic ...
    assert after and all(k == 4 for k in after), chosen  # ... until one splits in two


def test_inspect_score_and_plot_from_the_demo_checkpoint(demo_out, tmp_path):
    out, _ = demo_out
    runner = CliRunner()
    res = runner.invoke(main, ["inspect", str(out / "checkpoints")])
    assert res.exit_code == 0, res.output
    assert "K = 4" in res.output and "metrics.latency_ms" in res.output and "chosen_k" in res.output
    res = runner.invoke(main, ["inspect", str(out / "checkpoints"), "--json"])
    info = json.loads(res.output)
    assert info["n_components"] == 4 and abs(sum(info["weights"]) - 1) < 1e-9
    assert info["counters"]["records"] == 20000
    from online_gmm.demo import write_events
    day = tmp_path / "day.jsonl"
    truth = write_events(day, n=3000, seed=42)
    res = runner.invoke(main, ["score", "--checkpoint", str(out / "checkpoints"), "--input", str(day),
                               "--output", str(tmp_path / "scored.jsonl"),
                               "--dead-letters", str(tmp_path / "dead.jsonl")])
    assert res.exit_code == 0, res.output
    scored = [json.loads(l) for l in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert len(scored) == 3000 - truth["bad"].sum()
    assert len((tmp_path / "dead.jsonl").read_text().splitlines()) == truth["bad"].sum()
    ll = np.array([r["log_likelihood"] for r in scored])
    is_anomaly = np.array([truth["anomaly"][r["line"] - 1] for r in scored])
    assert ll[is_anomaly].max() < np.median(ll[~is_anomaly])   # anomalies score far lower
    res = runner.invoke(main, ["plot", str(out / "checkpoints"), "--out", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_run_rejects_unknown_config_keys(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[source]\ntype = "jsonl"\npath = "x.jsonl"\nfields = ["a"]\n\n[refit]\nevry = 10\n')
    res = CliRunner().invoke(main, ["run", "--config", str(cfg)])
    assert res.exit_code == 2
    assert "unknown key(s) in [refit]: 'evry'" in res.output


def _example(name, *args):
    return subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)


def test_example_daily_files_etl_resumes_by_day(tmp_path):
    first = _example("daily_files_etl.py", "--workdir", str(tmp_path), "--days", "2", "--per-day", "2500")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("records learned") == 2
    again = _example("daily_files_etl.py", "--workdir", str(tmp_path), "--days", "3", "--per-day", "2500")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("records learned") == 1 and "2026-11-03" in again.stdout
    state = json.loads((tmp_path / "model.json").read_text())
    assert len(state["done"]) == 3


def test_example_kafka_event_clustering(kafka_broker, kafka_topic, tmp_path):
    res = _example("kafka_event_clustering.py", "--records", "4000", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "events clustered" in res.stdout
    lines = (tmp_path / "clusters.jsonl").read_text().splitlines()
    dead = (tmp_path / "dead_letters.jsonl").read_text().splitlines()
    assert len(lines) + len(dead) == 4000
    offsets = [json.loads(l)["offset"] for l in lines]
    assert len(set(offsets)) == len(offsets)


def test_example_anomalies_to_kafka(kafka_broker, tmp_path):
    res = _example("anomalies_to_kafka.py", "--records", "5000", "--out", str(tmp_path),
                   "--bootstrap-servers", kafka_broker.bootstrap_servers, "--topic", "flagged-example")
    assert res.returncode == 0, res.stderr
    import re
    m = re.search(r"(\d+) events flagged and sent to 'flagged-example' \((\d+) read back\); (\d+) of the (\d+)",
                  res.stdout)
    assert m, res.stdout
    flagged, read_back, hits, injected = map(int, m.groups())
    assert flagged == read_back > 0
    assert hits >= 0.8 * injected


def test_demo_through_a_local_kafka_broker(tmp_path):
    """`online-gmm demo --kafka` starts Tansu on 127.0.0.1, streams the demo through it, stops it."""
    res = CliRunner().invoke(main, ["demo", "--kafka", "--out", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "local broker on 127.0.0.1:" in res.output
    assert "records 20000" in res.output and "rejected 111" in res.output
    assert len((tmp_path / "scores.jsonl").read_text().splitlines()) == 20000 - 111
    assert len((tmp_path / "dead_letters.jsonl").read_text().splitlines()) == 111
    # the broker process is gone afterwards
    import re
    port = re.search(r"127\.0\.0\.1:(\d+)", res.output).group(1)
    import socket
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(port))) != 0
