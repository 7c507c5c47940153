"""The worker's side of a scaled-out job: one partition, one round.

A task of :func:`partition_round` runs on a Dask worker. It is given the partition (which records,
which output files), where the round starts (the source's position, the outputs' sizes) and the
round's state (the parameters, the anomaly threshold, the sample's cut), and it:

1. reads exactly ``quota`` good records of its partition, in offset order (bad ones go to its
   dead-letter file with their reasons);
2. scores them under the round's parameters with the one mathematical core (:class:`Scorer`), flags
   anomalies against the round's threshold, and keeps out records the model must not learn, as the
   one-process pipeline does (too large for its arithmetic; a batch update they would make
   ill-defined);
3. writes its score, anomaly and dead-letter records to its own files and makes them durable;
4. returns only what the coordinator needs: the batch's sufficient statistics, a sketch of its
   scores, its sample candidates, counts and positions (and, while the model warms up, the rows the
   warm-up fit learns from).

A task is idempotent: it seeks the source and truncates its outputs to the round's start, so a round
redone after a worker died (Dask re-runs its tasks elsewhere) or after a resume writes every record
exactly once. Sources and outputs stay open on the worker between rounds (a Kafka consumer keeps its
connection and prefetched records) and are reused when they are where the round starts.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from connectors.base import Reject, records_from_columns, take_columns
from connectors.deadletter import DeadLetterSink
from online_gmm._bottomk import candidates, priorities
from online_gmm._em import learned_rows
from online_gmm._online import screen_extreme
from online_gmm._reading import GoodRecords
from online_gmm._records import score_columns, values_raw
from online_gmm._suffstats import SufficientStatistics
from online_gmm.model_spec import ModelSpec, check_random_state
from online_gmm.threshold import NLLThreshold

__all__ = ["partition_round", "close_job", "ROW_ID_BITS"]

#: Records a read-ahead asks of its source at a time (about 10 ms of decoding under the GIL).
READ_AHEAD_CHUNK = 4096

#: A record's id in the model's warm-up buffer: ``partition_index << ROW_ID_BITS | number``.
ROW_ID_BITS = 40


class _ReadAhead:
    """The next round's read, started on a thread when a round ends.

    While the coordinator gathers the round's results, merges them and sends the next round, the
    worker would sit idle; reading and decoding the next ``quota`` good records does not depend on
    the next round's parameters, so it is done meanwhile. The next task takes the read if it starts
    where the read started (the usual case), and otherwise discards it and seeks: the records a
    round reads are the same either way.
    """

    def __init__(self, source: Any, quota: int, timeout: float, idle_timeout: float | None,
                 stop_event: str | None) -> None:
        self.start = source.position()
        self.quota = quota
        self.cancel = threading.Event()
        self.result: tuple[tuple, str] | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(
            target=self._run, args=(source, quota, timeout, idle_timeout, stop_event),
            name="online-gmm-read-ahead", daemon=True)
        self._thread.start()

    def _run(self, source: Any, quota: int, timeout: float, idle_timeout: float | None,
             stop_event: str | None) -> None:
        t0 = time.perf_counter()
        try:
            self.result = _read(source, quota, timeout, idle_timeout, stop_event, self.cancel,
                                chunk=READ_AHEAD_CHUNK)
        except BaseException as exc:  # noqa: BLE001 - handed to the task that would have read
            self.error = exc
        self.seconds = time.perf_counter() - t0

    def take(self, start: Any, quota: int, stop_event: str | None) -> tuple[tuple, str] | None:
        """The read, if it starts at ``start`` and reads ``quota`` records (waiting for it to end),
        else None; ``((), "stopped")`` if the job is stopped while it waits for records."""
        if start is None or start != self.start or quota != self.quota:
            self.stop()
            return None
        while self._thread.is_alive():
            self._thread.join(0.5)
            if self._thread.is_alive() and _stop_requested(stop_event):
                self.stop()
                return ((), "stopped")
        if self.error is not None or self.result is None or self.result[1] == "stopped":
            return None
        return self.result

    def stop(self) -> None:
        """Cancel a read still waiting for records, and wait for the thread."""
        self.cancel.set()
        self._thread.join()


@dataclass
class _Handles:
    source: Any
    sinks: dict[str, Any]
    ahead: _ReadAhead | None = None


#: Open sources and outputs of this worker process, by (job id, partition tag).
_OPEN: dict[tuple[str, str], _Handles] = {}


def _open(spec: dict[str, Any]) -> _Handles:
    from online_gmm.config import build_sink, build_source
    key = (spec["job"], spec["tag"])
    h = _OPEN.get(key)
    if h is None:
        source = build_source(spec["source"])
        sinks = {}
        try:
            for name, cfg in spec["sinks"].items():
                sinks[name] = build_sink(cfg)
            if "dead_letters" in sinks:
                sinks["dead_letters"] = DeadLetterSink(sinks["dead_letters"])
        except BaseException:
            source.close()
            for s in sinks.values():
                s.close()
            raise
        h = _OPEN[key] = _Handles(source, sinks)
    return h


def _drop(spec: dict[str, Any]) -> None:
    h = _OPEN.pop((spec["job"], spec["tag"]), None)
    if h is None:
        return
    if h.ahead is not None:
        h.ahead.stop()
        h.ahead = None
    for obj in [h.source, *h.sinks.values()]:
        try:
            obj.close()
        except Exception:  # noqa: BLE001 - closing after a failure: the failure is what matters
            pass


def close_job(job: str) -> int:
    """Close this worker's sources and outputs of ``job`` (run on every worker at the end)."""
    tags = [k for k in _OPEN if k[0] == job]
    for _, tag in tags:
        _drop({"job": job, "tag": tag})
    return len(tags)


def _stop_requested(name: str | None) -> bool:
    if not name:
        return False
    try:
        from distributed import Event, get_client
        return Event(name, client=get_client()).is_set()
    except (ImportError, ValueError):   # not on a Dask worker (tests call the function directly)
        return False


def _read(source: Any, quota: int, timeout: float, idle_timeout: float | None,
          stop_event: str | None, cancel: threading.Event | None = None,
          chunk: int | None = None) -> tuple[tuple, str]:
    """Read until ``quota`` good records, the end, an idle timeout or a stop (the job's event, or
    ``cancel`` for a read-ahead); see the module doc.

    ``chunk`` caps the records asked of the source at a time. The records read are the same with or
    without it (each read asks for at most the good records still missing, so none is read past the
    quota); a read-ahead uses it because a decoder holds the GIL for its whole block, and a block of
    a whole round (about 100 ms for 40 000 records) would stall the worker's event loop, which is
    sending the round's result and receiving the next task meanwhile.
    """
    acc = GoodRecords()
    since = time.monotonic()
    checked = 0.0
    status = "records"
    while acc.good < quota:
        want = quota - acc.good
        b = source.read(want if chunk is None else min(want, chunk), timeout)
        if acc.add(b):
            since = time.monotonic()
        status = b.status
        if status == "end":
            break
        if status == "idle":
            if cancel is not None and cancel.is_set():
                return ((), "stopped")
            now = time.monotonic()
            if idle_timeout is not None and now - since >= idle_timeout:
                status = "idle-timeout"
                break
            if now - checked >= 0.5:
                checked = now
                if _stop_requested(stop_event):
                    return ((), "stopped")
    if status not in ("end", "idle-timeout"):
        status = "records"
    return (*acc.batch(), acc.consumed), status


def _online_of(state: dict[str, Any], n_features: int):
    """A fresh :class:`~online_gmm._online.OnlineEM` holding the round's state (never the caller's)."""
    spec = ModelSpec(**state["model_params"])
    online = spec._new_online(n_features, check_random_state(spec.random_state))
    online.n_components = int(state["n_components"])
    online.load_arrays(*state["model"])
    return online


def _score_round(online: Any, X: np.ndarray, ids: np.ndarray, skip_above: float | None):
    """Score a round's records, and the statistics of those the model may learn.

    The one-process pipeline's step (:meth:`OnlineEM.score_learn`) on this worker's copy of the
    round's state, without committing: one pass (:meth:`Scorer.score_statistics`) scores every
    record and sums the statistics of those the threshold leaves (``skip_above``); values too large
    for the arithmetic, or an update these statistics would make ill-defined, take the two-pass
    search of :func:`_learnable`.

    Returns
    -------
    resp, log_p, mask, refused, stats, ll
        Responsibilities (n, K) and log p (n,) of every record; the learned rows (n,), bool; the
        records kept out and why; their statistics (None if none) and summed log p.
    """
    n = X.shape[0]
    if not screen_extreme(X, ids)[1]:
        resp, log_p, learned, stats, ll = online.scorer().score_statistics(X, skip_above)
        mask = np.ones(n, dtype=bool) if learned is None else learned
        if not mask.any():
            return resp, log_p, mask, [], None, 0.0
        try:
            online._propose(X[mask], None, (stats, ll), (0, 0.0))
            return resp, log_p, mask, [], stats, ll
        except ValueError:
            pass                      # rare: the core's search, on the logs of the scores
    log_resp, log_p = online.scorer().log_resp(X)
    learn = np.ones(n, dtype=bool) if skip_above is None else learned_rows(log_p, skip_above)
    mask, refused, stats, ll = _learnable(online, X, log_resp, log_p, learn, ids)
    return np.exp(log_resp), log_p, mask, refused, stats, ll


def _learnable(online: Any, X: np.ndarray, log_resp: np.ndarray, log_p: np.ndarray,
               mask: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, list[tuple[int, str]], Any, float]:
    """Keep out of ``mask`` the records the model must not learn; their batch statistics.

    The same rules as the one-process pipeline: values too large for the arithmetic, then, if the
    update from the round's state with this partition's records is ill-defined, the fewest least
    plausible records that make it well-defined (the core's own search, on a copy of the state).
    """
    keep, refused = screen_extreme(X, ids)
    if refused:
        refused = [r for r, i in zip(refused, np.flatnonzero(~keep).tolist()) if mask[i]]
        mask = mask & keep
    stats, ll = None, 0.0
    if mask.any():
        Xl, lr, lp = X[mask], log_resp[mask], log_p[mask]
        stats = SufficientStatistics.from_resp(Xl, np.exp(lr), covariance_type=online.covariance_type)
        ll = float(lp.sum())
        try:
            online._propose(Xl, None, (stats, ll), (0, 0.0))
        except ValueError as err:
            more = online._guarded_step(Xl, None, ids[mask], lr, lp, err, "skip")
            if more:
                refused = refused + more
                mask = mask & ~np.isin(ids, [i for i, _ in more])
                stats = SufficientStatistics.from_resp(X[mask], np.exp(log_resp[mask]),
                                                       covariance_type=online.covariance_type) \
                    if mask.any() else None
                ll = float(log_p[mask].sum())
    return mask, refused, stats, ll


def partition_round(spec: dict[str, Any], start: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """Run one round of one partition (a Dask task); see the module docstring.

    Parameters
    ----------
    spec : dict
        The partition: ``job``, ``tag``, ``index``, the ``source`` and ``sinks`` configuration tables
        of this partition, ``include_features``, ``include_responsibilities``.
    start : dict
        Where the round starts: ``source`` (position or None: the beginning), ``sinks`` (name ->
        position or None), ``scored`` (good records of the partition scored before this round).
    state : dict
        ``quota``, ``timeout``, ``idle_timeout``, ``stop_event``, ``model`` (``OnlineEM.to_arrays()``
        or None while warming up), ``model_params``, ``n_components``, ``threshold`` (the round's
        value on -log p, None while not active), ``threshold_settings``, ``policy``,
        ``max_flagged``, ``labels``, ``sample_cut``, ``sample_size``, ``seed``, ``late`` (records of
        this partition the warm-up fit refused: ``[(number, reason, values)]``).

    Returns
    -------
    dict
        ``status`` ("records", "end", "idle-timeout" or "stopped"), ``source``/``sinks`` positions
        after the round, counts (``records``, ``good``, ``rejected``, ``learned``, ``anomalies``,
        ``scored``), ``stats`` (``SufficientStatistics.to_arrays()`` or None), ``ll``, ``threshold``
        (the state of a threshold holding only this round's scores), ``sample`` (rows, priorities),
        ``rows``/``row_ids`` (warm-up only), ``seconds``.
    """
    t0 = time.perf_counter()
    try:
        return _round(spec, start, state, t0)
    except BaseException:
        _drop(spec)     # a failed round leaves nothing half-open: the redo reopens at the start
        raise


def _round(spec: dict[str, Any], start: dict[str, Any], state: dict[str, Any], t0: float) -> dict[str, Any]:
    h = _open(spec)
    ahead, h.ahead = h.ahead, None
    taken = None if ahead is None else ahead.take(start["source"], state["quota"], state.get("stop_event"))
    if ahead is not None and taken is None and (ahead.error is not None or start["source"] is None):
        _drop(spec)                 # a source that failed, or a round from the beginning: reopen
        h = _open(spec)
    if taken is None and start["source"] is not None and h.source.position() != start["source"]:
        h.source.seek(start["source"])
    for name, sink in h.sinks.items():
        pos = start["sinks"].get(name)
        if pos is not None:
            sink.restore(pos)       # a no-op where the file already ends there
    if taken is not None:
        read, status = taken
    else:
        read, status = _read(h.source, state["quota"], state["timeout"], state["idle_timeout"],
                             state.get("stop_event"))
    if status == "stopped":
        _drop(spec)                 # nothing written; the round is abandoned and redone on resume
        return {"status": "stopped", "seconds": time.perf_counter() - t0}
    X, columns, rejects, position, consumed = read
    dead = h.sinks.get("dead_letters")
    late = [Reject(why, values_raw(np.asarray(x)), {"partition": spec["tag"], "record": int(num),
                                                     "refused_after": "warm-up fit"})
            for num, why, x in state.get("late") or ()]
    result: dict[str, Any] = {"status": status, "records": consumed, "rejected": len(rejects),
                              "good": 0, "learned": 0, "anomalies": 0, "scored": 0, "stats": None,
                              "ll": 0.0, "threshold": None, "sample": None, "rows": None,
                              "row_ids": None, "reasons": [r.reason for r in rejects], "refused": 0,
                              "loglik": (0, 0.0, 0, 0.0), "flagged_rows": None}
    n = X.shape[0]
    if n:
        X = np.ascontiguousarray(X, dtype=np.float64)
        ids = np.arange(start["scored"], start["scored"] + n, dtype=np.int64)
        flags = np.zeros(n, dtype=bool)
        if state["model"] is None:            # warming up: the coordinator's warm-up fit learns them
            out = None
            keep, refused = screen_extreme(X, ids)
            mask = np.ones(n, dtype=bool) if keep is None else keep
            result["rows"], result["row_ids"] = X[mask], ids[mask]
            result["learned"] = int(mask.sum())
        else:
            online = _online_of(state, X.shape[1])
            threshold = state["threshold"]        # the round's threshold, the same on every worker
            skip = threshold if threshold is not None and state["policy"] == "protect" else None
            resp, log_p, mask, refused, stats, ll = _score_round(online, X, ids, skip)
            if threshold is not None:
                flags = NLLThreshold(q=None, threshold=threshold).flag_many(-log_p)
            delta = NLLThreshold(**state["threshold_settings"])   # this round's scores, merged there
            delta.update_many(-log_p)
            result["threshold"] = delta.to_state()
            result["learned"] = int(mask.sum())
            result["ll"] = ll
            result["stats"] = None if stats is None else stats.to_arrays()
            out = (resp, log_p)
        result["scored"] = n
        keep = np.ones(n, dtype=bool)
        if refused:
            gone = np.isin(ids, [i for i, _ in refused])
            why = dict(refused)
            for i in np.flatnonzero(gone).tolist():
                meta = records_from_columns(take_columns(columns, [i]))[0]
                rejects.append(Reject(why[int(ids[i])], values_raw(X[i]), meta))
            keep = ~gone
            result["rejected"] += int(gone.sum())
            X, ids, flags = X[keep], ids[keep], flags[keep]
            columns = take_columns(columns, keep)
            if out is not None:
                out = (out[0][keep], out[1][keep])
        result["good"] = X.shape[0]
        result["anomalies"] = int(flags.sum())
        result["refused"] = n - X.shape[0]
        if out is not None:                   # for the job's timeline and metrics
            finite = np.isfinite(out[1])
            kept = finite & ~flags
            result["loglik"] = (int(finite.sum()), float(out[1][finite].sum()), int(kept.sum()),
                                float(out[1][kept].sum()))
        if flags.any():
            result["flagged_rows"] = X[flags][-state["max_flagged"]:]
        # the refit sample: neither flagged nor refused (the one-process rule)
        clean = ~flags
        prio = priorities(state["seed"], spec["index"], int(start["scored"]), n)[keep][clean]
        result["sample"] = candidates(X[clean], prio, state["sample_cut"], state["sample_size"])
        cols = score_columns(columns, out, flags, X, None if state["labels"] is None
                             else np.asarray(state["labels"]),
                             responsibilities=spec["include_responsibilities"],
                             features=spec["include_features"])
        if h.sinks.get("scores") is not None:
            h.sinks["scores"].write_columns(cols)
        if h.sinks.get("anomalies") is not None and flags.any():
            h.sinks["anomalies"].write_columns(take_columns(cols, flags))
    if dead is not None and (rejects or late):
        dead.write_rejects(late + rejects, position)
    for sink in h.sinks.values():
        sink.flush()                          # durable before the coordinator can checkpoint it
    lag = getattr(h.source, "lag", None)
    result["lag"] = lag() if lag is not None else None
    result["source"] = h.source.position()
    result["sinks"] = {name: sink.position() for name, sink in h.sinks.items()}
    result["seconds"] = time.perf_counter() - t0
    result["read_ahead_seconds"] = ahead.seconds if taken is not None else 0.0
    result["worker"] = _worker_address()
    if status == "records" and state["quota"] > 0 and state.get("read_ahead", True):
        h.ahead = _ReadAhead(h.source, state["quota"], state["timeout"], state["idle_timeout"],
                             state.get("stop_event"))
    return result


def _worker_address() -> str | None:
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):   # not on a Dask worker
        return None
