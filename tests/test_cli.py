"""The online-gmm command and the examples, run as a user would (on small data)."""

import json
import os
import signal
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


def test_demo_report_renders_in_a_real_browser(demo_out, tmp_path):
    """The demo writes report.html; headless Chromium renders it with no console or page error and
    no request beyond the file itself (the page is self-contained)."""
    from _browser import need_browser, render

    need_browser()
    out, text = demo_out
    assert f"report: {out / 'report.html'}" in text
    seen = render(out / "report.html", screenshot=tmp_path / "shot.png")
    assert seen.console_errors == [] and seen.page_errors == []
    assert seen.requests == [(out / "report.html").resolve().as_uri()]
    assert seen.title.startswith("online-gmm report: K = 4 components on 4 features")
    assert [f["label"] for f in seen.figures] == ["components", "k", "timeline", "pairs"]
    assert all(f["width"] > 400 and f["height"] > 200 for f in seen.figures), seen.figures
    assert (tmp_path / "shot.png").stat().st_size > 50_000


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
    # anomalies go to a Kafka topic in this mode: the outputs line names it, not a file
    assert "anomalies -> Kafka topic 'anomalies'" in res.output
    assert "anomalies.jsonl" not in res.output and not (tmp_path / "anomalies.jsonl").exists()
    assert "records 20000" in res.output and "rejected 111" in res.output
    assert len((tmp_path / "scores.jsonl").read_text().splitlines()) == 20000 - 111
    assert len((tmp_path / "dead_letters.jsonl").read_text().splitlines()) == 111
    # the broker process is gone afterwards
    import re
    port = re.search(r"127\.0\.0\.1:(\d+)", res.output).group(1)
    import socket
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(port))) != 0


# --------------------------------------------------------------------------- start-up and mistakes
HEAVY = ("numpy", "scipy", "sklearn", "river", "dask", "distributed", "pyarrow", "matplotlib", "pandas",
         "kafka", "confluent_kafka", "tqdm", "connectors")
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _loaded_after(code: str, names: tuple[str, ...] = HEAVY) -> list[str]:
    """Which of ``names`` (heavy modules) a fresh interpreter has loaded after running ``code``."""
    probe = (f"import sys\n{code}\n"
             f"print('loaded:' + ','.join(m for m in {names!r} if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env=ENV)
    assert res.returncode == 0, res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("loaded:"), res.stdout
    return [m for m in last[len("loaded:"):].split(",") if m]


@pytest.mark.parametrize("code", [
    "import online_gmm",
    "import online_gmm.cli",
    "from online_gmm.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass",
    "from online_gmm.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    "from online_gmm.cli import main\ntry:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass",
])
def test_help_and_version_load_no_heavy_module(code):
    """`online-gmm --help`/`--version` start in well under 0.3 s: nothing heavy is imported."""
    assert _loaded_after(code) == []


def test_lazy_package_attributes_still_work():
    assert _loaded_after("import online_gmm\nonline_gmm.OnlineGaussianMixture") != []
    res = subprocess.run([sys.executable, "-c", "from online_gmm import *; import online_gmm; "
                          "print(OnlineGaussianMixture.__name__, NLLThreshold.__name__, "
                          "'OnlineGMM' in dir(online_gmm))"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, env=ENV)
    assert res.stdout.split() == ["OnlineGaussianMixture", "NLLThreshold", "True"], res.stderr
    script = Path(sys.executable).parent / "online-gmm"
    res = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "0.1.0" in res.stdout


def _job(tmp: Path, *, source_path="in.jsonl", scores="out/scores.jsonl", ck="ck", extra="") -> Path:
    from online_gmm.demo import DEMO_FIELDS
    cfg = tmp / "job.toml"
    cfg.write_text(f"""
[source]
type = "jsonl"
path = "{source_path}"
fields = {json.dumps(DEMO_FIELDS)}

[model]
n_components = 3
warm_up = 300
random_state = 0

[checkpoint]
directory = "{ck}"
every = 500

[sinks.scores]
type = "jsonl"
path = "{scores}"

[sinks.dead_letters]
type = "jsonl"
path = "out/dead.jsonl"
{extra}
""")
    return cfg


def _online_gmm(*args, cwd=ROOT, **kw):
    return subprocess.run([sys.executable, "-m", "online_gmm.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=240, env=ENV, **kw)


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _assert_one_line(res, *needles):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("case", ["missing input", "input is a directory", "output under a file",
                                  "checkpoint directory under a file", "checkpoint directory is a file"])
def test_run_mistakes_are_one_line_exit_2_and_leave_no_files(tmp_path, case):
    from online_gmm.demo import write_events
    write_events(tmp_path / "in.jsonl", n=600, seed=1)
    (tmp_path / "blocker").write_text("a file, not a folder\n")
    kwargs, needle = {
        "missing input": ({"source_path": "nowhere.jsonl"}, "nowhere.jsonl"),
        "input is a directory": ({"source_path": "."}, "is a directory"),
        "output under a file": ({"scores": "blocker/scores.jsonl"}, "[sinks.scores]"),
        "checkpoint directory under a file": ({"ck": "blocker/ck"}, "[checkpoint] directory"),
        "checkpoint directory is a file": ({"ck": "blocker"}, "[checkpoint] directory"),
    }[case]
    cfg = _job(tmp_path, **kwargs)
    before = _files(tmp_path)
    res = _online_gmm("run", "--config", str(cfg), "--quiet", cwd=tmp_path)
    _assert_one_line(res, needle)
    assert _files(tmp_path) == before          # no empty output file, no checkpoint left behind


@pytest.mark.parametrize("args, needles", [
    (["frobnicate"], ["No such command 'frobnicate'", "cli --help')"]),
    (["--nope"], ["No such option '--nope'"]),
    (["run"], ["Missing option '--config'", "cli run --help')"]),
    (["run", "--config", "job.toml", "--max-records", "-1"], ["'--max-records'", "-1"]),
    (["run", "--config", "job.toml", "--log-format", "xml"], ["'--log-format'", "'xml'"]),
    (["score", "--checkpoint"], ["'--checkpoint' requires an argument", "--help')"]),
])
def test_usage_mistakes_are_one_line_with_the_help_hint(tmp_path, args, needles):
    """click's usage errors (usage, hint and error on three lines) come out as one line, exit 2, with
    the hint in brackets (the command is run as ``python -m online_gmm.cli`` here)."""
    res = _online_gmm(*args, cwd=tmp_path)
    _assert_one_line(res, *needles)
    assert "Usage:" not in res.stderr + res.stdout
    assert _files(tmp_path) == set()


def test_sigint_during_start_up_is_one_line_and_leaves_nothing(tmp_path):
    """Ctrl-C while the command is still reading its configuration (a FIFO that never delivers)."""
    fifo = tmp_path / "job.toml"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "online_gmm.cli", "run", "--config", str(fifo)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV)
    writer = os.open(fifo, os.O_WRONLY)     # returns once the command has opened the FIFO to read
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(writer)
    res = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    _assert_one_line(res, "interrupted")
    assert _files(tmp_path) == set()        # the FIFO is no regular file; nothing else was written


def test_inspect_mistakes_are_one_line(demo_out, tmp_path):
    out, _ = demo_out
    res = _online_gmm("inspect", str(out))                       # the demo folder, not checkpoints/
    _assert_one_line(res, "checkpoints")
    res = _online_gmm("inspect", str(out / "scores.jsonl"))      # not a checkpoint at all
    _assert_one_line(res, "is not a checkpoint")
    assert "pickle" not in res.stderr
    res = _online_gmm("inspect", str(tmp_path))                  # an empty folder
    _assert_one_line(res, "no checkpoint")


def test_score_mistakes_refusals_append_and_overwrite(demo_out, tmp_path):
    out, _ = demo_out
    from online_gmm.demo import write_events
    day = tmp_path / "day.jsonl"
    truth = write_events(day, n=1000, seed=7)
    ck = str(out / "checkpoints")
    scored = tmp_path / "scored.jsonl"
    res = _online_gmm("score", "--checkpoint", ck, "--input", str(day), "--output", str(scored),
                      "--fields", "metrics.cpu,metrics.mem")
    _assert_one_line(res, "--fields names 2 field(s) but the model reads 4")
    assert not scored.exists()
    res = _online_gmm("score", "--checkpoint", ck, "--input", str(tmp_path / "none.jsonl"),
                      "--output", str(scored))
    _assert_one_line(res, "none.jsonl")
    assert not scored.exists()
    res = _online_gmm("score", "--checkpoint", ck, "--input", str(day), "--output", str(scored))
    assert res.returncode == 0, res.stderr
    first = scored.read_bytes()
    n_good = 1000 - int(truth["bad"].sum())
    assert len(first.splitlines()) == n_good
    # the checkpoint holds the anomaly threshold: every score record says whether it is above it
    records = [json.loads(l) for l in first.splitlines()]
    flags = np.array([r["anomaly"] for r in records])
    injected = np.array([truth["anomaly"][r["line"] - 1] for r in records])
    assert flags[injected].all() and 0 < flags.sum() < 0.1 * n_good
    assert f"{int(flags.sum())} anomalies" in res.stdout
    res = _online_gmm("score", "--checkpoint", ck, "--input", str(day), "--output", str(scored))
    _assert_one_line(res, "already exists", "--append", "--overwrite")
    assert scored.read_bytes() == first
    res = _online_gmm("score", "--checkpoint", ck, "--input", str(day), "--output", str(scored),
                      "--overwrite")
    assert res.returncode == 0 and scored.read_bytes() == first
    res = _online_gmm("score", "--checkpoint", ck, "--input", str(day), "--output", str(scored),
                      "--append")
    assert res.returncode == 0 and scored.read_bytes() == first + first


def test_summary_checkpoint_counter_agrees_with_inspect(demo_out):
    out, text = demo_out
    import re
    summary = int(re.search(r"checkpoints (\d+)", text).group(1))
    res = CliRunner().invoke(main, ["inspect", str(out / "checkpoints"), "--json"])
    assert json.loads(res.output)["counters"]["checkpoints"] == summary > 0


def test_demo_explains_its_anomaly_flags(demo_out):
    _, text = demo_out
    import re
    m = re.search(r"anomaly flags: (\d+) of (\d+) scored events, .* 0.99 quantile .* about 1% are "
                  r"flagged by construction; the stream holds (\d+) injected anomalies, (\d+) of them "
                  r"flagged", text)
    assert m, text
    flagged, scored, injected, caught = map(int, m.groups())
    assert scored == 20000 - 111 and injected == 116 and 0.8 * injected <= caught <= injected
    assert f"anomalies {flagged}" in text


def test_relative_paths_are_resolved_against_the_config_folder(tmp_path):
    """`run` from another working directory reads and writes next to the configuration file."""
    from online_gmm.demo import write_events
    job = tmp_path / "job"
    job.mkdir()
    write_events(job / "in.jsonl", n=800, seed=2)
    cfg = _job(job)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = _online_gmm("run", "--config", str(cfg), "--quiet", cwd=elsewhere)
    assert res.returncode == 0, res.stderr
    assert (job / "out" / "scores.jsonl").stat().st_size > 0 and any((job / "ck").glob("ckpt-*.npz"))
    assert list(elsewhere.iterdir()) == []


def test_run_loads_no_plotting_or_cluster_library(tmp_path):
    """`online-gmm run` on a JSON lines job imports neither matplotlib nor Dask (only where used)."""
    from online_gmm.demo import write_events
    write_events(tmp_path / "in.jsonl", n=600, seed=1)
    cfg = _job(tmp_path)
    code = ("from online_gmm.cli import main\ntry:\n"
            f"    main(['run', '--config', {str(cfg)!r}, '--quiet'])\nexcept SystemExit as exc:\n"
            "    assert not exc.code, exc.code")
    loaded = _loaded_after(code)
    assert "numpy" in loaded                               # it did run
    assert not {"matplotlib", "dask", "distributed"} & set(loaded), loaded


#: what `online-gmm run` must not import before its first records are scored (about 2 s of start-up
#: with scikit-learn, whose base module pulls in scipy.stats and pandas): they are imported where used
NOT_BEFORE_FIRST_RECORD = ("sklearn", "river", "scipy.stats", "scipy.optimize", "pandas", "pyarrow",
                           "dask", "distributed", "matplotlib")


def test_run_reaches_its_first_records_without_heavy_modules(tmp_path):
    """`online-gmm run` stopped within the warm-up (--max-records 200 < warm_up 300, batches of 100)
    has read, scored and written its records, loading none of scikit-learn, River, scipy.stats,
    scipy.optimize, pandas, pyarrow, Dask or matplotlib: start-up well under a second."""
    from online_gmm.demo import write_events
    write_events(tmp_path / "in.jsonl", n=600, seed=1)
    cfg = _job(tmp_path, extra="[pipeline]\nbatch_size = 100\n")
    code = ("from online_gmm.cli import main\ntry:\n"
            f"    main(['run', '--config', {str(cfg)!r}, '--max-records', '200', '--quiet'])\n"
            "except SystemExit as exc:\n    assert not exc.code, exc.code")
    loaded = _loaded_after(code, ("numpy", *NOT_BEFORE_FIRST_RECORD))
    assert loaded == ["numpy"], loaded                     # it ran, and loaded nothing heavy
    rows = [json.loads(line) for line in (tmp_path / "out/scores.jsonl").read_text().splitlines()]
    assert len(rows) == 200 and all(r["warming_up"] for r in rows)
    assert (tmp_path / "ck").is_dir()                      # and checkpointed its state


def test_run_with_a_model_spec_equals_run_with_the_estimator(tmp_path):
    """The CLI's sklearn-free ModelSpec drives the very model an OnlineGaussianMixture would: same
    random streams through the warm-up's k-means and the refits, same checkpointed state."""
    from connectors.files import JSONLinesSource
    from online_gmm.cli import build_pipeline
    from online_gmm.config import load_config
    from online_gmm.demo import DEMO_FIELDS, write_events
    from online_gmm.estimator import OnlineGaussianMixture
    from online_gmm.model_spec import ModelSpec
    from online_gmm.pipeline import Pipeline
    from online_gmm.threshold import NLLThreshold

    write_events(tmp_path / "in.jsonl", n=1500, seed=2)
    cfg = load_config(_job(tmp_path, extra="[pipeline]\nbatch_size = 100\n[refit]\nevery = 500\n"))
    pipe = build_pipeline(cfg)
    assert isinstance(pipe.model, ModelSpec)
    pipe.run()
    pipe.close()
    ref = Pipeline(JSONLinesSource(str(tmp_path / "in.jsonl"), fields=DEMO_FIELDS),
                   OnlineGaussianMixture(**cfg["model"]), batch_size=100, refit_every=500,
                   seed=cfg["refit"]["seed"], anomaly=NLLThreshold(q=0.99, min_samples=200))
    ref.run()
    ref.close()
    assert pipe.summary.refits == ref.summary.refits == 2
    assert pipe.summary.anomalies == ref.summary.anomalies > 0
    (a, meta_a), (b, meta_b) = pipe.online.to_arrays(), ref.online.to_arrays()
    assert meta_a == meta_b and a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    fitted = pipe.fitted_model()
    assert isinstance(fitted, OnlineGaussianMixture) and pipe.model is fitted
    np.testing.assert_array_equal(fitted.means_, ref.fitted_model().means_)
    assert fitted.n_features_in_ == len(DEMO_FIELDS)
    assert fitted.get_params() == {**ModelSpec(**cfg["model"]).get_params(),
                                   "n_components": pipe.online.n_components}   # K of the refits


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
@pytest.mark.parametrize("which", ["scores", "ck"])
def test_unwritable_output_or_checkpoint_folder_is_one_line(tmp_path, which):
    from online_gmm.demo import write_events
    write_events(tmp_path / "in.jsonl", n=300, seed=1)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        cfg = _job(tmp_path, **({"scores": "locked/scores.jsonl"} if which == "scores" else {"ck": "locked/ck"}))
        before = _files(tmp_path)
        res = _online_gmm("run", "--config", str(cfg), "--quiet", cwd=tmp_path)
        _assert_one_line(res, "is not writable")
        assert _files(tmp_path) == before
    finally:
        locked.chmod(0o700)
