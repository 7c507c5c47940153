"""The bundled example event stream, and the generator that made it.

``online_gmm/data/events.jsonl.gz`` holds 20 000 JSON events from a web service: latency, response
size, CPU and memory, nested under ``metrics``. Three kinds of traffic make three clusters until
half-way, when one of them splits in two (a new kind of client appears), so a good pipeline's BIC history
moves from K=3 to K=4. About 0.5% of the events are anomalies (far from every cluster) and about 0.5%
are malformed (broken JSON, a missing metric, text or NaN where a number belongs), which a pipeline
must quarantine.

Examples
--------
>>> from online_gmm.demo import generate_events
>>> lines, truth = generate_events(n=50, seed=1)
>>> len(lines), sorted(truth)
(50, ['anomaly', 'bad', 'cluster'])
"""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["DEMO_FIELDS", "demo_events_path", "generate_events", "write_events"]

#: the fields of each event that the demo model reads (dotted paths into the JSON)
DEMO_FIELDS = ["metrics.latency_ms", "metrics.bytes_kb", "metrics.cpu", "metrics.mem"]

_BEFORE = np.array([[120.0, 40.0, 0.30, 0.40], [480.0, 300.0, 0.55, 0.70], [60.0, 900.0, 0.20, 0.25]])
_SCALE = np.array([[15.0, 6.0, 0.04, 0.04], [40.0, 30.0, 0.05, 0.05], [8.0, 60.0, 0.03, 0.03]])
# after the change: cluster 1 splits into two kinds of clients
_AFTER = np.vstack([_BEFORE[0], [380.0, 260.0, 0.50, 0.62], [620.0, 360.0, 0.62, 0.80], _BEFORE[2]])
_AFTER_SCALE = np.vstack([_SCALE[0], _SCALE[1] * 0.8, _SCALE[1] * 0.8, _SCALE[2]])


def generate_events(n: int = 20_000, seed: int = 0, *, anomaly_rate: float = 0.005,
                    bad_rate: float = 0.005) -> tuple[list[bytes], dict[str, np.ndarray]]:
    """Generate the demo stream.

    Returns
    -------
    lines : list of bytes, length n
        One JSON event per line (without the newline).
    truth : dict
        ``cluster`` (n,) int (-1 for anomalies and bad records), ``anomaly`` (n,) bool,
        ``bad`` (n,) bool.
    """
    rng = np.random.default_rng(seed)
    cluster = np.empty(n, dtype=int)
    X = np.empty((n, 4))
    half = n // 2
    w_before, w_after = np.array([0.5, 0.3, 0.2]), np.array([0.4, 0.2, 0.2, 0.2])
    cluster[:half] = rng.choice(3, size=half, p=w_before)
    cluster[half:] = rng.choice(4, size=n - half, p=w_after)
    X[:half] = _BEFORE[cluster[:half]] + rng.standard_normal((half, 4)) * _SCALE[cluster[:half]]
    X[half:] = _AFTER[cluster[half:]] + rng.standard_normal((n - half, 4)) * _AFTER_SCALE[cluster[half:]]
    anomaly = rng.random(n) < anomaly_rate
    X[anomaly] = np.array([2500.0, 3000.0, 0.97, 0.97]) * rng.uniform(0.6, 1.0, size=(anomaly.sum(), 4))
    bad = (rng.random(n) < bad_rate) & ~anomaly
    cluster[anomaly | bad] = -1
    kinds = ["truncated", "missing", "text", "nan", "not_object"]
    lines: list[bytes] = []
    t0 = 1_764_000_000.0
    for i in range(n):
        event = {
            "id": f"evt-{i:06d}",
            "ts": round(t0 + i * 0.25, 3),
            "service": "checkout",
            "metrics": {"latency_ms": round(float(X[i, 0]), 3), "bytes_kb": round(float(X[i, 1]), 3),
                        "cpu": round(float(X[i, 2]), 5), "mem": round(float(X[i, 3]), 5)},
        }
        line = json.dumps(event, separators=(",", ":"))
        if bad[i]:
            kind = kinds[int(rng.integers(len(kinds)))]
            if kind == "truncated":
                line = line[: len(line) // 2]
            elif kind == "missing":
                del event["metrics"]["cpu"]
                line = json.dumps(event, separators=(",", ":"))
            elif kind == "text":
                event["metrics"]["latency_ms"] = "slow"
                line = json.dumps(event, separators=(",", ":"))
            elif kind == "nan":
                line = line.replace(f'"mem":{event["metrics"]["mem"]}', '"mem":NaN')
            else:
                line = json.dumps([event["id"], "oops"])
        lines.append(line.encode())
    return lines, {"cluster": cluster, "anomaly": anomaly, "bad": bad}


def write_events(path: str | Path, n: int = 20_000, seed: int = 0, **kwargs) -> dict[str, np.ndarray]:
    """Write :func:`generate_events` output as JSON Lines (gzip if ``path`` ends in ``.gz``).

    ``kwargs`` go to :func:`generate_events` (``anomaly_rate``, ``bad_rate``).
    """
    lines, truth = generate_events(n, seed, **kwargs)
    data = b"\n".join(lines) + b"\n"
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.GzipFile(path, "wb", mtime=0) as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return truth


def demo_events_path() -> Path:
    """Path of the bundled ``events.jsonl.gz`` shipped with the package."""
    return Path(str(resources.files("online_gmm") / "data" / "events.jsonl.gz"))


if __name__ == "__main__":  # regenerate the bundled file: python -m online_gmm.demo
    out = Path(__file__).parent / "data" / "events.jsonl.gz"
    out.parent.mkdir(exist_ok=True)
    truth = write_events(out)
    print(f"wrote {out} ({out.stat().st_size} bytes): {int(truth['anomaly'].sum())} anomalies, "
          f"{int(truth['bad'].sum())} malformed")
