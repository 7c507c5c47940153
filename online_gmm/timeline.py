"""A bounded history of a running job, kept in its checkpoints: what the report draws over time.

:class:`Timeline` holds one entry per ``span`` batches: the records read, good, rejected, flagged
and scored in them, the sum of the finite log-likelihoods scored (for the mean), and, as they were at
the entry's last batch, the numbers of records read and good so far, the number of components, the anomaly
threshold and the time. It never holds more than ``capacity`` entries: when a new entry would not
fit, adjacent pairs of entries are merged (sums added, end values taken from the later one) and
``span`` doubles, so the whole run is always covered at a resolution that halves as the run grows
(``capacity`` entries cost a few tens of kilobytes in a checkpoint however long the job runs).

Alongside it the most recent flagged records (``max_flagged`` feature vectors) are kept, to be
marked on the report's pictures. The whole state is JSON (no pickle), restored exactly on resume,
so a resumed job's timeline continues as an uninterrupted job's would (except the wall-clock
fields ``time`` and ``seconds``).

Examples
--------
>>> t = Timeline(capacity=4)
>>> for b in range(9):
...     t.add_batch(records=10, good=9, rejected=1, flagged=0, scored=9, sum_loglik=-18.0, k=3,
...                 threshold=None, records_end=10 * (b + 1), good_end=9 * (b + 1), seconds=0.01,
...                 time=0.0)
>>> t.span, len(t), t.columns()["batches"]
(4, 3, [4, 4, 1])
>>> t.columns()["records_end"], t.mean_loglik()
([40, 80, 90], [-2.0, -2.0, -2.0])
>>> Timeline.from_state(t.to_state()).to_state() == t.to_state()
True
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

__all__ = ["Timeline"]

_FORMAT = 1
#: summed over the batches an entry covers
_SUMS = ("batches", "records", "good", "rejected", "flagged", "scored", "sum_loglik", "scored_kept",
         "sum_loglik_kept", "seconds", "refits")
#: taken from the entry's last batch
_ENDS = ("records_end", "good_end", "k", "threshold", "time", "bic_gap", "chosen_k")
_FIELDS = _SUMS + _ENDS


class Timeline:
    """Per-batch counters of a job, downsampled by merging pairs to stay within ``capacity`` entries.

    Parameters
    ----------
    capacity : int, default=256
        Most entries kept (even, >= 2).
    max_flagged : int, default=300
        Most recent flagged records kept (their feature vectors).
    """

    def __init__(self, capacity: int = 256, max_flagged: int = 300) -> None:
        if not isinstance(capacity, int) or capacity < 2 or capacity % 2:
            raise ValueError(f"capacity must be an even integer >= 2, got {capacity!r}")
        if not isinstance(max_flagged, int) or max_flagged < 0:
            raise ValueError(f"max_flagged must be an integer >= 0, got {max_flagged!r}")
        self.capacity = capacity
        self.max_flagged = max_flagged
        self.span = 1                                   # batches per entry
        self.entries: list[dict[str, Any]] = []
        self.flagged: list[list[float]] = []           # most recent flagged rows, oldest first

    def __len__(self) -> int:
        return len(self.entries)

    # ------------------------------------------------------------------------------ updates
    def add_batch(self, *, records: int, good: int, rejected: int, flagged: int, scored: int,
                  sum_loglik: float, k: int | None, scored_kept: int = 0, sum_loglik_kept: float = 0.0,
                  threshold: float | None, records_end: int,
                  good_end: int, seconds: float, time: float) -> None:
        """Count one batch.

        Parameters
        ----------
        records, good, rejected, flagged : int
            Records of the batch read, good, rejected and flagged as anomalies.
        scored, sum_loglik : int, float
            Records scored by a fitted model with a finite log-likelihood, and the sum of those.
        scored_kept, sum_loglik_kept : int, float
            The same for the records that were not flagged (the fit of the bulk of the stream).
        k : int or None
            Components after the batch (None while warming up).
        threshold : float or None
            The anomaly threshold on ``-log p`` after the batch (None: none active).
        records_end, good_end : int
            Records read, and good records, so far in the job (over resumes).
        seconds, time : float
            The batch's processing time, and the wall-clock time (Unix seconds) at its end.
        """
        row = {"batches": 1, "records": int(records), "good": int(good), "rejected": int(rejected),
               "flagged": int(flagged), "scored": int(scored), "sum_loglik": float(sum_loglik),
               "scored_kept": int(scored_kept), "sum_loglik_kept": float(sum_loglik_kept),
               "seconds": float(seconds), "refits": 0, "records_end": int(records_end),
               "good_end": int(good_end),
               "k": None if k is None else int(k), "threshold": _finite_or_none(threshold),
               "time": float(time), "bic_gap": None, "chosen_k": None}
        if self.entries and self.entries[-1]["batches"] < self.span:
            self.entries[-1] = _merge(self.entries[-1], row)
            return
        if len(self.entries) >= self.capacity:
            self.entries = [_merge(a, b) for a, b in zip(self.entries[::2], self.entries[1::2])]
            self.span *= 2
            if self.entries[-1]["batches"] < self.span:
                self.entries[-1] = _merge(self.entries[-1], row)
                return
        self.entries.append(row)

    def add_refit(self, row: Mapping[str, Any]) -> None:
        """Record a refit (a :class:`~online_gmm.refit.BICHistory` row) in the current entry: its
        chosen K and the criterion's gap to the runner-up (None with one candidate)."""
        if not self.entries:
            return
        last = self.entries[-1]
        last["refits"] += 1
        last["chosen_k"] = int(row["chosen_k"])
        last["bic_gap"] = criterion_gap(row)

    def add_flagged(self, X: np.ndarray) -> None:
        """Keep the most recent flagged records, ``X`` of shape (n_flagged, n_features)."""
        if self.max_flagged == 0 or not len(X):
            return
        rows = np.asarray(X, dtype=np.float64)[-self.max_flagged:].tolist()
        self.flagged = (self.flagged + rows)[-self.max_flagged:]

    # ------------------------------------------------------------------------------ reading
    def columns(self) -> dict[str, list[Any]]:
        """The entries as columns, ``{field: [value per entry]}``."""
        return {f: [e[f] for e in self.entries] for f in _FIELDS}

    def mean_loglik(self) -> list[float | None]:
        """Mean log-likelihood of the scored records of each entry (None where none was scored)."""
        return [e["sum_loglik"] / e["scored"] if e["scored"] else None for e in self.entries]

    def mean_loglik_kept(self) -> list[float | None]:
        """Mean log-likelihood of the scored records that were not flagged, per entry."""
        return [e["sum_loglik_kept"] / e["scored_kept"] if e["scored_kept"] else None
                for e in self.entries]

    def anomaly_rate(self) -> list[float | None]:
        """Share of the good records of each entry flagged as anomalies (None where none was good)."""
        return [e["flagged"] / e["good"] if e["good"] else None for e in self.entries]

    # ------------------------------------------------------------------------------ state
    def to_state(self) -> dict[str, Any]:
        """JSON-able state (columns, so a long timeline stays compact)."""
        return {"format": _FORMAT, "capacity": self.capacity, "max_flagged": self.max_flagged,
                "span": self.span, "entries": self.columns(), "flagged": self.flagged}

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> "Timeline":
        """Restore from :meth:`to_state`; ``None`` (a checkpoint written before timelines) gives an
        empty timeline.

        Raises
        ------
        ValueError
            If the state was written in another format.
        """
        if state is None:
            return cls()
        if state.get("format") != _FORMAT:
            raise ValueError(f"timeline format {state.get('format')!r} is not {_FORMAT}")
        t = cls(int(state["capacity"]), int(state["max_flagged"]))
        t.span = int(state["span"])
        cols = state["entries"]
        n = len(cols["batches"])
        t.entries = [{f: cols[f][i] if f in cols else 0 for f in _FIELDS} for i in range(n)]
        t.flagged = [list(map(float, row)) for row in state["flagged"]]
        return t


def criterion_gap(row: Mapping[str, Any]) -> float | None:
    """How much worse the runner-up K scored than the chosen K at a refit (BIC or AIC, lower is
    better); None when only one candidate was fitted.

    Examples
    --------
    >>> criterion_gap({"chosen_k": 3, "candidates": [{"k": 2, "bic": 130.0}, {"k": 3, "bic": 100.0},
    ...                                              {"k": 4, "bic": 104.5}]})
    4.5
    """
    crit = row.get("criterion", "bic")
    chosen = [c[crit] for c in row["candidates"] if c["k"] == row["chosen_k"]]
    others = [c[crit] for c in row["candidates"] if c["k"] != row["chosen_k"]]
    if not chosen or not others:
        return None
    return _finite_or_none(float(min(others) - chosen[0]))


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {f: a[f] + b[f] for f in _SUMS}
    for f in _ENDS:
        out[f] = b[f]
    if b["refits"] == 0:            # the later half had no refit: the earlier one's result stands
        out["bic_gap"], out["chosen_k"] = a["bic_gap"], a["chosen_k"]
    return out


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)
