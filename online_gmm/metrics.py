"""Prometheus metrics of a running job (``online-gmm run --metrics-port PORT``).

The metrics live in a private :class:`prometheus_client.CollectorRegistry` (never the process-wide
one) served by ``prometheus_client``'s own HTTP server thread, on 127.0.0.1 unless told otherwise.
They are updated from the pipeline's events (:class:`JobMetrics` is an observer of
:class:`~online_gmm.pipeline.Pipeline`), once per batch, so the hot path pays nothing per record.

Counters count the work of this process and start at 0 when it starts, as Prometheus expects of a
counter (a resumed job replays the records read after its last checkpoint, and counts them again);
the job's totals over resumes are in the final summary and in ``online-gmm inspect``.

Metrics (``prometheus_client`` adds ``_total`` to counters, ``_bucket``/``_sum``/``_count`` to
the histogram):

- ``online_gmm_records_total{status}`` (counter): records by ``status``: ``read`` (= ``good`` +
  ``rejected``), ``good``, ``rejected``, ``learned``, ``flagged`` (anomalies);
- ``online_gmm_rejected_records_total{reason}`` (counter): rejected records by reason class, one of
  :data:`REASONS`;
- ``online_gmm_batches_total``, ``online_gmm_refits_total``, ``online_gmm_checkpoints_total``
  (counters);
- ``online_gmm_last_checkpoint_timestamp_seconds`` (gauge): Unix time of the last checkpoint;
- ``online_gmm_seconds_since_last_checkpoint`` (gauge): computed when scraped (since the start
  before the first checkpoint);
- ``online_gmm_components`` (gauge): the current number of components K (NaN while warming up);
- ``online_gmm_anomaly_threshold`` (gauge): the threshold on -log p (NaN while none is active);
- ``online_gmm_batch_mean_log_likelihood`` (gauge): mean log p(x) of the last batch's scored records;
- ``online_gmm_batch_duration_seconds`` (histogram): time to process one batch, reading excluded,
  refits and checkpoints excluded;
- ``online_gmm_kafka_consumer_lag{topic,partition}`` (gauge): records behind the partition's
  high-water mark from the last fetch (Kafka sources; a revoked partition's series is removed);
- ``online_gmm_start_time_seconds`` (gauge): Unix time the job started.
"""

from __future__ import annotations

import re
import time
from typing import Any

__all__ = ["JobMetrics", "REASONS", "reason_class", "MetricsUnavailable"]

#: Reason classes of rejected records (the ``reason`` label): a fixed, small set, so the label's
#: cardinality stays bounded whatever the records hold.
REASONS = ("malformed", "missing", "not_a_number", "not_finite", "refused_by_model", "other")

_PATTERNS = (   # first match wins; the texts are the connectors' reasons
    ("missing", re.compile(r"is missing|is null|missing field")),
    ("not_finite", re.compile(r"is not finite|too large for float64")),
    ("not_a_number", re.compile(r"is not a number|is a bool, not a number")),
    ("malformed", re.compile(r"^malformed|not a JSON object|is not an object|invalid UTF-8|"
                             r"^expected \d+|line is longer|empty")),
)

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class MetricsUnavailable(ImportError):
    """prometheus-client is not installed."""


def reason_class(reason: str) -> str:
    """The class of a reject reason, one of :data:`REASONS`.

    Examples
    --------
    >>> reason_class("field 'metrics.cpu' is missing"), reason_class("malformed JSON (x): b'{'")
    ('missing', 'malformed')
    >>> reason_class("field 'metrics.mem' is not finite: NaN"), reason_class("something new")
    ('not_finite', 'other')
    """
    for name, pattern in _PATTERNS:
        if pattern.search(reason):
            return name
    return "other"


class JobMetrics:
    """The job's metrics on a private registry; call it with pipeline events.

    Parameters
    ----------
    source : connectors.base.Source, optional
        Asked for ``lag()`` after every batch when it has that method (Kafka sources).

    Raises
    ------
    MetricsUnavailable
        If prometheus-client is not installed (the message names the extra to install).
    """

    def __init__(self, source: Any = None) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError:
            raise MetricsUnavailable(
                'metrics need prometheus-client: pip install "online-gmm[metrics]"') from None
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.source = source
        self.records = Counter("online_gmm_records", "Records by status: read (= good + rejected), "
                               "good, rejected, learned, flagged (anomalies).", ["status"], registry=r)
        self.rejected = Counter("online_gmm_rejected_records", "Rejected records by reason class.",
                                ["reason"], registry=r)
        self.batches = Counter("online_gmm_batches", "Batches processed.", registry=r)
        self.refits = Counter("online_gmm_refits", "Refits made.", registry=r)
        self.checkpoints = Counter("online_gmm_checkpoints", "Checkpoints written.", registry=r)
        self.last_checkpoint = Gauge("online_gmm_last_checkpoint_timestamp_seconds",
                                     "Unix time of the last checkpoint written.", registry=r)
        since = Gauge("online_gmm_seconds_since_last_checkpoint",
                      "Seconds since the last checkpoint (since the start before the first).",
                      registry=r)
        since.set_function(lambda: time.time() - self._last_checkpoint_time)
        self.components = Gauge("online_gmm_components", "Current number of components K.", registry=r)
        self.threshold = Gauge("online_gmm_anomaly_threshold",
                               "Anomaly threshold on -log p (NaN while none is active).", registry=r)
        self.loglik = Gauge("online_gmm_batch_mean_log_likelihood",
                            "Mean log-likelihood of the last batch's scored records.", registry=r)
        self.duration = Histogram("online_gmm_batch_duration_seconds",
                                  "Seconds to process one batch (refits and checkpoints excluded).",
                                  buckets=_BUCKETS, registry=r)
        self.lag = Gauge("online_gmm_kafka_consumer_lag",
                         "Records behind the partition's high-water mark (from the last fetch).",
                         ["topic", "partition"], registry=r)
        started = Gauge("online_gmm_start_time_seconds", "Unix time the job started.", registry=r)
        self._last_checkpoint_time = time.time()
        started.set(self._last_checkpoint_time)
        for status in ("read", "good", "rejected", "learned", "flagged"):
            self.records.labels(status)       # every series exists from the start, at 0
        for reason in REASONS:
            self.rejected.labels(reason)
        for gauge in (self.components, self.threshold, self.loglik):
            gauge.set(float("nan"))
        self._lag_keys: set[tuple[str, str]] = set()
        self.server: Any = None

    # ------------------------------------------------------------------------------ serving
    def serve(self, port: int, address: str = "127.0.0.1") -> tuple[str, int]:
        """Start the HTTP server thread; returns the address and port it listens on (``port=0``
        picks a free port).

        Raises
        ------
        OSError
            If the port cannot be bound.
        """
        from prometheus_client import start_http_server

        server, _ = start_http_server(port, addr=address, registry=self.registry)
        self.server = server
        host, bound = server.server_address[:2]
        return str(host), int(bound)

    def close(self) -> None:
        """Stop the HTTP server (the metrics disappear with the process anyway)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # ------------------------------------------------------------------------------ events
    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        handler = getattr(self, f"_on_{event}", None)
        if handler is not None:
            handler(fields)

    def _on_resume(self, fields: dict[str, Any]) -> None:
        if fields.get("n_components") is not None:
            self.components.set(fields["n_components"])

    def _on_batch(self, f: dict[str, Any]) -> None:
        self.batches.inc()
        self.records.labels("read").inc(f["records"])
        self.records.labels("good").inc(max(f["good"], 0))
        self.records.labels("rejected").inc(f["rejected"])
        self.records.labels("flagged").inc(f["flagged"])
        self.records.labels("learned").inc(max(f["learned"], 0))
        for reason in f["reasons"]:
            self.rejected.labels(reason_class(reason)).inc()
        if f["refused"] > 0:
            self.rejected.labels("refused_by_model").inc(f["refused"])
        self.duration.observe(f["seconds"])
        self.threshold.set(float("nan") if f["threshold"] is None else f["threshold"])
        if f["mean_loglik"] is not None:
            self.loglik.set(f["mean_loglik"])
        if f.get("n_components") is not None:
            self.components.set(f["n_components"])
        self._update_lag()

    def _on_refit(self, fields: dict[str, Any]) -> None:
        self.refits.inc()
        self.components.set(fields["row"]["chosen_k"])

    def _on_checkpoint(self, fields: dict[str, Any]) -> None:
        self.checkpoints.inc()
        self._last_checkpoint_time = time.time()
        self.last_checkpoint.set(self._last_checkpoint_time)

    def _update_lag(self) -> None:
        lag = getattr(self.source, "lag", None)
        if lag is None:
            return
        try:
            now = {(topic, str(partition)): n for (topic, partition), n in lag().items()}
        except Exception:  # noqa: BLE001 - a metric must never stop the job; the read will say why
            return
        for key in self._lag_keys - set(now):       # partitions revoked by a rebalance
            self.lag.remove(*key)
        for key, n in now.items():
            self.lag.labels(*key).set(n)
        self._lag_keys = set(now)
