"""Scoring and learning of one batch of :class:`~online_gmm.pipeline.Pipeline`: the E-step that scores
the records before they are learned, the anomaly policy's skip rule, the dead-lettering of records
the model refused, and the warm-up's record of rows; the mixin :class:`_ScoringMixin`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from connectors.base import Reject, records_from_columns, take_columns
from online_gmm._records import score_columns, values_raw


class _ScoringMixin:
    """Scores, learns and dead-letters one batch (for :class:`~online_gmm.pipeline.Pipeline`)."""

    def _score_and_learn(self, X: np.ndarray, columns: dict[str, Any], position: Any) -> np.ndarray:
        """Score the batch, learn it, and write its score records as columns.

        Returns the rows that may enter the refit sample (neither flagged nor refused), shape (n,).
        """
        online = self._online
        n = X.shape[0]
        flags = np.zeros(n, dtype=bool)
        learned = [n]
        base = self.summary.good - n          # id of the first row: good records before this batch
        ids = np.arange(base, base + n, dtype=np.int64)
        warming = not online.initialised

        def decide(log_p: np.ndarray) -> np.ndarray:
            if self.anomaly is not None:
                flags[:] = self.anomaly.flag_many(-log_p)
            mask = ~flags if self.anomaly_policy == "protect" else np.ones_like(flags)
            learned[0] = int(mask.sum())
            return mask

        try:
            fused, skip_above = self._skip_rule(n)
            if fused:
                out, refused = online.score_learn(X, skip_above=skip_above, ids=ids)
                if out is not None:
                    decide(out[1])
            else:
                out, refused = online.score_then_learn(X, decide, ids=ids)
                if out is not None:
                    out = (np.exp(out[0]), out[1])
        except ValueError as exc:
            # the core could not learn the batch and could name no record for it (it leaves its
            # state as it was): the whole batch goes to the dead letters, and the stream goes on
            out, learned[0], flags[:] = None, n, False
            refused = [(int(i), f"the model could not learn the batch holding this record: {exc}")
                       for i in ids.tolist()]
        self.summary.learned += learned[0]
        self.summary.n_components = online.n_components if online.initialised else None
        keep = np.ones(n, dtype=bool)
        if refused:
            keep = self._quarantine(refused, X, ids, columns, position)
            X, columns, flags = X[keep], take_columns(columns, keep), flags[keep]
            if out is not None:
                out = (out[0][keep], out[1][keep])
            n = X.shape[0]
        if warming:
            self._remember_warm_up(X, ids[keep], columns, online.initialised, refused)
        self.summary.anomalies += int(flags.sum())
        if out is not None:
            finite = np.isfinite(out[1])
            kept = finite & ~flags
            self._batch_loglik = (int(finite.sum()), float(out[1][finite].sum()), int(kept.sum()),
                                  float(out[1][kept].sum()))
        if flags.any():
            self.timeline.add_flagged(X[flags])
        keep[keep] = ~flags
        scores_sink, anomalies_sink = self.sinks["scores"], self.sinks["anomalies"]
        if scores_sink is None and anomalies_sink is None:
            return keep
        cols = score_columns(columns, out, flags, X, self._labels,
                             responsibilities=self.include_responsibilities,
                             features=self.include_features)
        if scores_sink is not None:
            scores_sink.write_columns(cols)
        if anomalies_sink is not None and flags.any():
            anomalies_sink.write_columns(take_columns(cols, flags))
        return keep

    def _skip_rule(self, n: int) -> tuple[bool, float | None]:
        """Whether the next batch of ``n`` records can take the one-pass step, and its skip rule.

        The one pass (:meth:`OnlineEM.score_learn`) needs to know, before it scores, which scores
        keep a record out of the model: none (no threshold, or the ``adapt`` policy) or those the
        threshold will flag (:meth:`NLLThreshold.batch_threshold`); the batch in which a quantile
        reaches ``min_samples`` takes the two-pass step.
        """
        if self.anomaly is None or self.anomaly_policy != "protect":
            return True, None
        return self.anomaly.batch_threshold(n)

    def _quarantine(self, refused: list[tuple[int, str]], X: np.ndarray, ids: np.ndarray,
                    columns: dict[str, Any], position: Any) -> np.ndarray:
        """Dead-letter the records the model refused; returns the rows of this batch that remain.

        A record refused by the warm-up fit may come from an earlier batch: it was written to the
        scores as warming up, and its position comes from the warm-up's record of positions.
        """
        s = self.summary
        why = dict(refused)
        here = np.isin(ids, np.fromiter(why, dtype=np.int64, count=len(why)))
        rejects = []
        for i in np.flatnonzero(here).tolist():
            meta = {k: v for k, v in records_from_columns(take_columns(columns, [i]))[0].items()}
            rejects.append(Reject(why[int(ids[i])], values_raw(X[i]), meta))
        earlier = sorted(set(why) - set(ids[here].tolist()))
        if earlier:
            where = {rid: (block, j) for block in (self._warm_up_meta or [])
                     for j, rid in enumerate(block["ids"])}
            for rid in earlier:
                if rid in where:
                    block, j = where[rid]
                    meta, raw = dict(zip(block["keys"], block["rows"][j])), values_raw(np.asarray(block["x"][j]))
                else:
                    meta, raw = {"record": rid}, b""
                rejects.append(Reject(why[rid], raw, {**meta, "refused_after": "warm-up fit"}))
        s.good -= len(rejects)
        s.rejected += len(rejects)
        s.learned -= len(rejects)
        if self.sinks["dead_letters"] is not None:
            self.sinks["dead_letters"].write_rejects(rejects, position)
        return ~here

    def _remember_warm_up(self, X: np.ndarray, ids: np.ndarray, columns: dict[str, Any],
                          done: bool, refused: list[tuple[int, str]]) -> None:
        """Keep the positions and values of the rows buffered by the warm-up (its fit may refuse one
        of them later); once the fit is made, the rows it kept are handed to the refit sample."""
        blocks = self._warm_up_meta or []
        if done:
            gone = {rid for rid, _ in refused}
            rows = [x for b in blocks for rid, x in zip(b["ids"], b["x"]) if rid not in gone] + X.tolist()
            self._warm_up_rows_kept = np.asarray(rows, dtype=np.float64).reshape(-1, X.shape[1])
            self._warm_up_meta = None
            return
        # one block per batch: its column names in order, one list of values per row (JSON keeps
        # lists in order, so a resumed job writes the same dead letters)
        keys = list(columns)
        rows = list(map(list, zip(*(columns[k].tolist() for k in keys)))) if keys else [[]] * len(ids)
        self._warm_up_meta = blocks + [{"keys": keys, "ids": ids.tolist(), "rows": rows, "x": X.tolist()}]
