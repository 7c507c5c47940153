"""The history of refits: one JSON-able row per refit, bounded, with a plain-text table.

:class:`BICHistory`
    the rows of the refits (every candidate K's BIC, AIC and mean log-likelihood, the chosen K),
    checkpointed as JSON, the oldest dropped past ``max_rows``.

Moved here from :mod:`online_gmm.refit`, which still exports it.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import numpy as np

from online_gmm._json import _jsonable

__all__ = ["BICHistory"]

_CRITERIA = ("bic", "aic")


class BICHistory:
    """The rows of the refits, JSON-able, in order: the most recent ``max_rows`` of them.

    A job that runs for months refits thousands of times; its checkpoint keeps the latest
    ``max_rows`` rows (the report's K-over-time panel reads the job's bounded timeline for the rest),
    and counts the older ones in ``dropped`` so the refit numbers of :meth:`table` stay those of the
    whole job.

    Parameters
    ----------
    rows : iterable of dict, optional
    max_rows : int, default=1000
    dropped : int, default=0
        Rows dropped before these (restored from a checkpoint).

    Examples
    --------
    >>> from online_gmm.bic_history import BICHistory
    >>> h = BICHistory()
    >>> h.append({"n_seen": 1000, "time": 0.0, "chosen_k": 2,
    ...           "candidates": [{"k": 1, "bic": 250.0, "aic": 240.0, "loglik": -1.2},
    ...                          {"k": 2, "bic": 200.5, "aic": 180.0, "loglik": -0.9}]})
    >>> print(h.table())
    refit  n_seen  chosen_k  bic[k=1]   bic[k=2]
        0    1000         2     250.0      200.5*
    >>> BICHistory.from_json(h.to_json()).rows == h.rows
    True
    >>> short = BICHistory(h.rows * 3, max_rows=2)
    >>> len(short), short.dropped
    (2, 1)
    """

    def __init__(self, rows: Iterable[dict[str, Any]] = (), *, max_rows: int = 1000, dropped: int = 0) -> None:
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ValueError(f"max_rows must be an integer >= 1, got {max_rows!r}")
        self.max_rows = max_rows
        self.dropped = int(dropped)
        self.rows: list[dict[str, Any]] = []
        for r in rows:
            self.append(r)

    def append(self, row: dict[str, Any]) -> None:
        """Append a row (a JSON round-tripped copy, so it is checked to be JSON-able); past
        ``max_rows`` rows the oldest is dropped."""
        if not isinstance(row, dict) or "candidates" not in row or "chosen_k" not in row:
            raise ValueError(f"a history row must be a dict with 'candidates' and 'chosen_k', got {row!r}")
        self.rows.append(json.loads(json.dumps(_jsonable(row))))
        if len(self.rows) > self.max_rows:
            del self.rows[0]
            self.dropped += 1

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def to_json(self) -> str:
        return json.dumps(self.rows)

    @classmethod
    def from_json(cls, text: str) -> "BICHistory":
        return cls(json.loads(text))

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Checkpoint form (no arrays; the rows go into the metadata)."""
        return {}, {"rows": json.loads(self.to_json()), "dropped": self.dropped, "max_rows": self.max_rows}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> "BICHistory":
        # checkpoints written before the history was bounded hold neither "dropped" nor "max_rows"
        return cls(meta["rows"], max_rows=max(int(meta.get("max_rows", 1000)), len(meta["rows"]), 1),
                   dropped=int(meta.get("dropped", 0)))

    def table(self, criterion: str | None = None) -> str:
        """A plain-text table: one line per refit, one column per K; ``*`` marks the chosen K.

        Parameters
        ----------
        criterion : {'bic', 'aic'}, optional
            Column values (default: each row's own criterion, else BIC).
        """
        if criterion is not None and criterion not in _CRITERIA:
            raise ValueError(f"criterion must be one of {_CRITERIA}, got {criterion!r}")
        ks = sorted({c["k"] for r in self.rows for c in r["candidates"]})
        crit = criterion or (self.rows[-1].get("criterion", "bic") if self.rows else "bic")
        header = ["refit", "n_seen", "chosen_k"] + [f"{crit}[k={k}] " for k in ks]
        lines = [header]
        for i, r in enumerate(self.rows, start=self.dropped):
            by_k = {c["k"]: c for c in r["candidates"]}
            cells = [str(i), "-" if r.get("n_seen") is None else str(r["n_seen"]), str(r["chosen_k"])]
            for k in ks:
                if k in by_k:
                    cells.append(f"{by_k[k][crit]:.1f}" + ("*" if k == r["chosen_k"] else " "))
                else:
                    cells.append("- ")
            lines.append(cells)
        widths = [max(len(line[j]) for line in lines) for j in range(len(header))]
        out = ["  ".join(cell.rjust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
        return "\n".join(out)

