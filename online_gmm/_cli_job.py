"""Starting and running a pipeline job for ``online-gmm run`` and ``demo``: the checks of a
configuration's files, the pipeline built from it (:func:`build_pipeline`), the progress bar, the
monitoring, the clean-up of what a failed start created, and the summary.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Callable

import click

from online_gmm._cli_errors import JobFailed, Mistake, _describe, _error_types

if TYPE_CHECKING:  # pragma: no cover
    from online_gmm.pipeline import Pipeline, RunSummary

__all__ = ["build_pipeline"]


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
