"""Screenshots of what a user sees in TensorBoard, taken in headless Chromium.

Trains a quickstart-sized run (16² decaying turbulence, the small U-Net, the monitor over D4 with
the identity metric) into a temporary log folder — or uses ``--logdir`` — starts TensorBoard on
it, opens the Time Series, Custom Scalars, Images, HParams and Text dashboards in headless
Chromium (Debian's ``chromium`` and ``chromium-driver`` packages, driven by Selenium; no browser is
downloaded) and saves one PNG per dashboard into ``--output``; then writes
``symcoherence analyze --report`` of the run's last checkpoint and screenshots that page too.

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
    "text": "#text",
}
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1100",
)


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


def screenshots(
    logdir: Path, output: Path, settle: float = 8.0, report: Path | None = None
) -> list[Path]:
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
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
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
        if report is not None:
            driver.get(report.resolve().as_uri())
            time.sleep(1.0)
            height = driver.execute_script("return document.body.scrollHeight")
            driver.set_window_size(1600, min(int(height) + 100, 6000))
            path = output / "report.png"
            driver.save_screenshot(str(path))
            saved.append(path)
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)
    return saved


def write_report(logdir: Path, output: Path) -> Path:
    """``symcoherence analyze --report`` of the run's last checkpoint, with its history."""
    run = logdir / "quickstart" / "version_0"
    checkpoint = sorted(run.glob("checkpoints/*.ckpt"))[-1]
    path = output / "report.html"
    command = [sys.executable, "-m", "symcoherence.cli", "analyze", str(checkpoint)]
    command += ["--output", str(logdir / "analysis"), "--report", str(path), "--run", str(run)]
    subprocess.run(command, check=True, cwd=ROOT)
    return path


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", type=Path, help="existing logs (default: train a small run)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    if args.logdir is not None:
        return screenshots(args.logdir, args.output)
    with tempfile.TemporaryDirectory() as folder:
        train(Path(folder))
        args.output.mkdir(parents=True, exist_ok=True)
        report = write_report(Path(folder), args.output)
        paths = screenshots(Path(folder), args.output, report=report)
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    main()
