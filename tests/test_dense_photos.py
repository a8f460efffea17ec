"""The qualitative-pictures script (scikit-image photographs through street-seg and the dense attacks) runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dense_photos_script_writes_its_figure(tmp_path):
    out = tmp_path / "photos.png"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "dense_photos.py"), "--steps", "2", "--size", "32",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = [line for line in done.stdout.splitlines() if "static target agreement" in line]
    assert [line.split(":")[0] for line in lines] == ["astronaut", "coffee", "chelsea", "rocket"]
