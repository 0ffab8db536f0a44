"""The worker package must stay light: importing it never pulls in TensorFlow."""

from __future__ import annotations

import subprocess
import sys


def test_import_detector_does_not_import_tensorflow() -> None:
    code = (
        "import sys, detector, detector.cli, detector.artifact, detector.features\n"
        "detector.cli.build_parser()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'tensorflow', 'keras'})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"detector imported: {out.stdout.strip()}"
