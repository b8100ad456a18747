"""What users see: TensorBoard's dashboards open in headless Chromium with the monitor's data."""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("chromium") is None or importlib.util.find_spec("selenium") is None,
        reason="needs Debian's chromium and chromium-driver and the selenium package",
    ),
]


def test_every_dashboard_renders_a_screenshot(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "tensorboard_screenshots",
        Path(__file__).resolve().parents[1] / "benchmarks" / "tensorboard_screenshots.py",
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    paths = module.main(["--output", str(tmp_path)])
    assert sorted(p.name for p in paths) == sorted(
        [f"tensorboard_{name}.png" for name in module.DASHBOARDS] + ["report.png"]
    )
    assert all(p.stat().st_size > 20_000 for p in paths)  # a drawn page, not a blank one
