"""Structured logs of a running job: one JSON object per event (``online-gmm run --log-format json``).

Events go through the standard :mod:`logging` module, logger ``online_gmm.job``; with the JSON format
a handler on stderr writes each as one line that log collectors parse without rules::

    {"time": "2026-12-04T20:31:07.412Z", "level": "info", "event": "refit", "message": "...", ...}

The ``event`` field is stable and names what happened; the other fields depend on it:

``start``
    ``config``, ``checkpoint_dir``, ``source``, ``batch_size``, ``fingerprint``, ``pid``,
    ``version``, ``metrics`` (the scrape URL, or null).
``resume``
    ``path`` (the checkpoint), ``counters``, ``n_components``.
``refit``
    ``row`` (the BIC history row: ``n_seen``, ``chosen_k``, ``criterion``, ``candidates`` with
    ``k``, ``bic``, ``aic``, ``loglik``), ``gap`` (the criterion's margin of the chosen K over the
    runner-up).
``checkpoint``
    ``path``, ``counters``.
``rejected``
    the records rejected since the previous such event, written with each checkpoint and at the stop
    when there were any: ``count``, ``by_reason`` (reason class -> count), ``examples`` (up to 3
    reasons).
``stop``
    ``reason`` (``end``, ``max-records``, ``signal``, ``error``), ``counters``, ``n_components``,
    ``seconds``, and ``error`` when it failed.
``warning``
    a Python warning raised while the job runs (a refit skipped, a component re-seeded), as its
    ``message``.

Non-finite numbers are written as ``null`` (JSON has no NaN).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections import Counter
from typing import Any, TextIO

__all__ = ["JSONFormatter", "JobLog", "LOGGER_NAME", "json_handler"]

LOGGER_NAME = "online_gmm.job"


def _clean(obj: Any) -> Any:
    """``obj`` with non-finite floats replaced by None and tuples by lists (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if hasattr(obj, "item"):          # NumPy scalars
        return _clean(obj.item())
    return str(obj)


class JSONFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``event``, ``message``, then
    the record's ``fields`` (from ``extra={"event": ..., "fields": {...}}``).

    Examples
    --------
    >>> import logging
    >>> rec = logging.LogRecord("online_gmm.job", logging.INFO, __file__, 1, "K is %d", (3,), None)
    >>> rec.event, rec.fields, rec.created = "refit", {"gap": float("nan")}, 0.0
    >>> print(JSONFormatter().format(rec))
    {"time": "1970-01-01T00:00:00.000Z", "level": "info", "event": "refit", "message": "K is 3", "gap": null}
    """

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out = {"time": f"{stamp}.{int(record.created % 1 * 1000):03d}Z",
               "level": record.levelname.lower(),
               "event": getattr(record, "event", "warning" if record.name == "py.warnings" else "message"),
               "message": record.getMessage()}
        for key, value in (getattr(record, "fields", None) or {}).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(_clean(out), allow_nan=False)


def json_handler(stream: TextIO | None = None) -> logging.Handler:
    """A handler writing :class:`JSONFormatter` lines to ``stream`` (default: stderr)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JSONFormatter())
    return handler


class JobLog:
    """Turns pipeline events into log records on the ``online_gmm.job`` logger.

    Parameters
    ----------
    logger : logging.Logger, optional
        Default: ``logging.getLogger("online_gmm.job")``.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger(LOGGER_NAME)
        self._rejects: Counter[str] = Counter()
        self._examples: list[str] = []

    def event(self, event: str, message: str, level: int = logging.INFO, **fields: Any) -> None:
        """Log one event."""
        self.log.log(level, message, extra={"event": event, "fields": fields})

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        if event == "batch":
            if fields["rejected"]:
                from online_gmm.metrics import reason_class
                for reason in fields["reasons"]:
                    self._rejects[reason_class(reason)] += 1
                if fields["refused"] > 0:
                    self._rejects["refused_by_model"] += fields["refused"]
                self._examples = (self._examples + fields["reasons"][:3])[:3]
        elif event == "refit":
            from online_gmm.timeline import criterion_gap
            row = fields["row"]
            gap = criterion_gap(row)
            crit = row.get("criterion", "bic").upper()
            margin = f", {crit} {gap:.1f} below the runner-up" if gap is not None else ""
            self.event("refit", f"refit at record {row.get('n_seen')}: K={row['chosen_k']}{margin}",
                       row=row, gap=gap)
        elif event == "checkpoint":
            self.flush_rejects()
            self.event("checkpoint", f"checkpoint {fields['path']}", **fields)
        elif event == "resume":
            self.event("resume", f"resumed from {fields['path']}", **fields)

    def flush_rejects(self) -> None:
        """Log the rejected-record summary since the previous one, if any record was rejected."""
        count = sum(self._rejects.values())
        if count:
            by_reason = dict(sorted(self._rejects.items()))
            self.event("rejected", f"{count} record(s) rejected: " +
                       ", ".join(f"{k} {v}" for k, v in by_reason.items()),
                       level=logging.WARNING, count=count, by_reason=by_reason,
                       examples=self._examples)
        self._rejects.clear()
        self._examples = []
