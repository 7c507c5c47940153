"""Remake docs/report.png: run the demo, open its report in headless Chromium, keep the first screen.

    python docs/report_screenshot.py          # needs the test extra and Debian's chromium

It uses the same browser and flags as the report's test (tests/_browser.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _browser import render  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:     # run where the README's quick start runs it
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-m", "online_gmm.cli", "demo", "--quiet"], check=True, cwd=tmp,
                       env=env, stdout=subprocess.DEVNULL)
        seen = render(Path(tmp) / "online-gmm-demo" / "report.html",
                      screenshot=ROOT / "docs" / "report.png", width=1400, clip_height=1120)
    if seen.console_errors or seen.page_errors:
        raise SystemExit(f"the page reported errors: {seen.console_errors + seen.page_errors}")
    print(f"wrote {ROOT / 'docs' / 'report.png'}")


if __name__ == "__main__":
    main()
