"""The work behind the commands on a saved model (``inspect``, ``score``, ``plot``, ``report``):
loading a checkpoint with a mistake as one line, the saved anomaly threshold, the outputs' guards,
batch scoring of a file and drawing the plot or report.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

from online_gmm._cli_errors import Mistake, _describe


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
