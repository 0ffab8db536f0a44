"""The worker package must stay light: importing it never pulls in TensorFlow."""

from __future__ import annotations

import subprocess
import sys

from tests.detector.test_import_boundaries import VALUE_MODULES


def test_import_detector_does_not_import_tensorflow() -> None:
    code = (
        "import sys, detector, detector.cli, detector.engine.artifact, detector.engine.features\n"
        "detector.cli.build_parser()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'tensorflow', 'keras'})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"detector imported: {out.stdout.strip()}"


def test_settings_and_mqtt_client_do_not_load_the_detection_core() -> None:
    # The settings are read before anything else at start-up (and by every CLI command that
    # fails on a bad one): they hold the core's tunables, not the core.
    code = (
        "import sys, detector.config.settings\n"
        "after_settings = 'numpy' in sys.modules\n"
        "import detector.worker.mqtt_client\n"
        "core = {'detector.engine.core', 'detector.engine.scoring', 'detector.engine.relations',"
        " 'detector.engine.windows'}\n"
        "print(after_settings, ','.join(sorted(core & set(sys.modules))), sep=';')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    numpy_after_settings, core_loaded = out.stdout.strip().split(";")
    assert core_loaded == "", f"detection core loaded: {core_loaded}"
    assert numpy_after_settings == "False", "importing detector.config.settings loaded numpy"


def test_settings_are_a_leaf_when_imported() -> None:
    # What `tests/detector/test_import_boundaries.py` checks in the sources, checked in a
    # process: the settings bring in the settings, a few value modules, and pydantic.
    code = (
        "import sys, detector.config.settings\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'detector', 'training', 'numpy', 'msgspec', 'paho', 'nats'})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.strip().split(","))
    allowed = {"detector", "detector.engine", "detector.worker", *VALUE_MODULES}
    outside = {m for m in loaded if m not in allowed and not m.startswith("detector.config")}
    assert outside == set(), f"importing the settings loaded {sorted(outside)}"
