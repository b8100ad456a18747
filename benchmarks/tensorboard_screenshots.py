"""Screenshots of what a user sees in TensorBoard, taken in headless Chromium.

Trains a quickstart-sized run (16² decaying turbulence, the small U-Net, the monitor over D4 with
the identity metric) into a temporary log folder — or uses ``--logdir`` — starts TensorBoard on
it, opens the Time Series/Scalars, Custom Scalars, Images and HParams dashboards in headless
Chromium (Debian's ``chromium`` and ``chromium-driver`` packages, driven by Selenium; no browser is
downloaded) and saves one PNG per dashboard into ``--output``.

    python benchmarks/tensorboard_screenshots.py --output docs/screenshots
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = {
    "scalars": "#timeseries",
    "custom_scalars": "#custom_scalars",
    "images": "#images",
    "hparams": "#hparams",
}


def train(logdir: Path) -> None:
    """A quickstart-sized run with the monitor, logged into ``logdir``."""
    source = "--data.init_args.source.init_args"
    command = [
        sys.executable,
        "-m",
        "symcoherence.cli",
        "fit",
        "--config",
        str(ROOT / "configs" / "quickstart.yaml"),
        f"{source}.n=16",
        f"{source}.num_trajectories=64",
        f"{source}.num_frames=12",
        f"--data.init_args.cache_dir={logdir / 'cache'}",
        "--data.init_args.progress=false",
        "--trainer.max_epochs=4",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={logdir}",
    ]
    subprocess.run(command, check=True, cwd=ROOT)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, seconds: float = 60.0) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"TensorBoard did not answer at {url} within {seconds} s")


def screenshots(logdir: Path, output: Path, settle: float = 6.0) -> list[Path]:
    """Serve ``logdir`` with TensorBoard and save one screenshot per dashboard into ``output``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    output.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1100"):
        options.add_argument(flag)
    driver = None
    saved = []
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for(url)
        service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
        driver = webdriver.Chrome(options=options, service=service)
        for name, fragment in DASHBOARDS.items():
            driver.get(url + fragment)
            time.sleep(settle)  # let the dashboard fetch and draw its data
            path = output / f"tensorboard_{name}.png"
            driver.save_screenshot(str(path))
            saved.append(path)
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)
    return saved


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", type=Path, help="existing logs (default: train a small run)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    if args.logdir is not None:
        return screenshots(args.logdir, args.output)
    with tempfile.TemporaryDirectory() as folder:
        train(Path(folder))
        paths = screenshots(Path(folder), args.output)
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    main()
