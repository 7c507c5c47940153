"""Helpers for tests that kill real processes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, **kw) -> subprocess.Popen:
    """``python -m online_gmm.cli ARGS`` from the repository root, BLAS on one thread, pipes open."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "online_gmm.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def kill_after_progress(proc, ck_dir: Path, delay: float, timeout: float = 120) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds after a checkpoint it wrote appears in ``ck_dir``.

    Tying the moment to progress (not to wall-clock time since start) makes every kill land mid-stream
    whatever the machine's speed: mid-batch, mid-write or mid-refit. Returns True if it was killed
    (False if it had already finished).
    """
    seen = set(ck_dir.glob("ckpt-*.npz"))
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if set(ck_dir.glob("ckpt-*.npz")) - seen:
            break
        time.sleep(0.005)
    time.sleep(delay)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    return killed
