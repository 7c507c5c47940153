"""What ``online-gmm run`` shows to the people and tools that watch a job: metrics, logs, the stored
configuration.

:class:`Watch` attaches :class:`~online_gmm.metrics.JobMetrics` (with ``--metrics-port`` or
``[metrics] port``) and :class:`~online_gmm.logs.JobLog` (with ``--log-format json``) to a pipeline
as observers, serves the metrics and writes the ``start`` and ``stop`` events. With the default human
format nothing changes: a progress bar while it runs, a summary at the end, plus one line naming the
metrics address when metrics are served.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import sys
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from online_gmm.pipeline import Pipeline, RunSummary

__all__ = ["Watch", "WatchError", "attach", "public_config", "LOG_FORMATS"]

LOG_FORMATS = ("human", "json")
_SECRET = re.compile(r"pass|secret|token|credential|sasl|key|auth|cert", re.IGNORECASE)


class WatchError(ValueError):
    """Metrics or logs cannot be set up as asked (a missing library, a port that cannot be bound);
    the message says what to do."""


def attach(pipe: Pipeline, cfg: Mapping[str, Any], *, config_path: str | None, port: int | None,
           address: str | None, log_format: str) -> "Watch":
    """A started :class:`Watch` for ``pipe``: metrics when a port is given (``port``, else
    ``[metrics] port``), JSON logs with ``log_format='json'``.

    Raises
    ------
    WatchError
        prometheus-client is missing, the port cannot be bound, or the pipeline takes no observers.
    """
    port = port if port is not None else cfg.get("metrics", {}).get("port")
    address = address or cfg.get("metrics", {}).get("address") or "127.0.0.1"
    watch = None
    try:
        metrics = None
        if port is not None:
            from online_gmm.metrics import JobMetrics
            metrics = JobMetrics()
        watch = Watch(pipe, metrics, log_format=log_format)
        watch.start(cfg, config_path=config_path, metrics_port=port, metrics_address=address)
        return watch
    except (ImportError, OSError, ValueError) as exc:
        if watch is not None:
            watch.close()
        if isinstance(exc, OSError) and not isinstance(exc, ImportError):
            raise WatchError(f"cannot serve metrics on {address}:{port}: "
                             f"{exc.strerror or exc}") from None
        raise WatchError(str(exc)) from None


def public_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration as it may be shown in a report: client ``settings`` whose names suggest a
    secret (password, token, SASL, key, certificate) are replaced by ``"<hidden>"``.

    Examples
    --------
    >>> public_config({"source": {"settings": {"sasl_plain_password": "x", "session_timeout_ms": 2}},
    ...                "sinks": {}})["source"]["settings"]
    {'sasl_plain_password': '<hidden>', 'session_timeout_ms': 2}
    """
    out = copy.deepcopy(dict(cfg))
    tables = [out.get("source") or {}, *((out.get("sinks") or {}).values())]
    for table in tables:
        settings = table.get("settings")
        if isinstance(settings, dict):
            table["settings"] = {k: ("<hidden>" if _SECRET.search(str(k)) else v)
                                 for k, v in settings.items()}
    return out


class Watch:
    """Metrics and structured logs around one run of a pipeline.

    Parameters
    ----------
    pipe : Pipeline
    metrics : online_gmm.metrics.JobMetrics or None
        Created beforehand (so a missing prometheus-client is reported before anything is opened).
    log_format : {'human', 'json'}
    """

    def __init__(self, pipe: Pipeline, metrics: Any = None, *, log_format: str = "human") -> None:
        if log_format not in LOG_FORMATS:
            raise ValueError(f"log_format must be one of {LOG_FORMATS}, got {log_format!r}")
        self.pipe = pipe
        self.metrics = metrics
        self.log_format = log_format
        self.url: str | None = None
        self.joblog = None
        self._handler: logging.Handler | None = None

    def start(self, cfg: Mapping[str, Any], *, config_path: str | None, metrics_port: int | None,
              metrics_address: str) -> None:
        """Serve the metrics, attach the observers and log the ``start`` event.

        Raises
        ------
        OSError
            If the metrics port cannot be bound.
        ValueError
            If the pipeline takes no observers (a scaled-out job, for now).
        """
        observers = getattr(self.pipe, "observers", None)
        if observers is None and (metrics_port is not None or self.log_format == "json"):
            raise ValueError("metrics and JSON logs are not available for this kind of job "
                             f"({type(self.pipe).__name__})")
        if self.metrics is not None and metrics_port is not None:
            self.metrics.source = self.pipe.source
            host, port = self.metrics.serve(metrics_port, metrics_address)
            shown = f"[{host}]" if ":" in host else host
            self.url = f"http://{shown}:{port}/metrics"
            observers.append(self.metrics)
            if self.log_format == "human":
                print(f"metrics: {self.url}", file=sys.stderr, flush=True)
        if self.log_format == "json":
            from online_gmm.logs import LOGGER_NAME, JobLog, json_handler
            logger = logging.getLogger(LOGGER_NAME)
            self._handler = json_handler()
            logger.addHandler(self._handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False
            logging.captureWarnings(True)          # a warning is an event too, not a text line
            logging.getLogger("py.warnings").addHandler(self._handler)
            self.joblog = JobLog(logger)
            observers.append(self.joblog)
            src = cfg["source"]
            self.joblog.event(
                "start", f"online-gmm run: {src['type']} source, batches of {cfg['pipeline']['batch_size']}",
                config=None if config_path is None else os.path.abspath(config_path),
                checkpoint_dir=cfg["checkpoint"].get("directory"), source=src["type"],
                batch_size=cfg["pipeline"]["batch_size"],
                fingerprint=getattr(self.pipe, "fingerprint", None), pid=os.getpid(),
                version=_version(), metrics=self.url)

    def stop(self, summary: RunSummary | None, *, max_records: int | None,
             error: BaseException | None = None) -> None:
        """Log the last rejected-record summary and the ``stop`` event; stop serving metrics."""
        try:
            if self.joblog is not None:
                self.joblog.flush_rejects()
                s = summary if summary is not None else self.pipe.summary
                if error is not None:
                    reason = "error"
                elif s.stopped_by_signal:
                    reason = "signal"
                elif max_records is not None and s.records >= max_records:
                    reason = "max-records"
                else:
                    reason = "end"
                fields: dict[str, Any] = {"reason": reason, "counters": s.counters(),
                                          "n_components": s.n_components, "seconds": s.seconds}
                if error is not None:
                    fields["error"] = str(error) or type(error).__name__
                self.joblog.event("stop", f"stopped ({reason}) after {s.records} records",
                                  level=logging.ERROR if error is not None else logging.INFO, **fields)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the metrics server and remove the log handler (idempotent)."""
        if self.metrics is not None:
            self.metrics.close()
        if self._handler is not None:
            logging.getLogger("online_gmm.job").removeHandler(self._handler)
            logging.getLogger("py.warnings").removeHandler(self._handler)
            logging.captureWarnings(False)
            self._handler = None


def _version() -> str | None:
    try:
        from importlib.metadata import version
        return version("online-gmm")
    except Exception:  # noqa: BLE001 - a source checkout without metadata
        return None
