"""The README's code examples run as written."""

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _python_block(heading: str) -> str:
    section = README.split(f"## {heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_callback_example_runs_and_logs_coherence(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the example writes ./runs and ./data_cache
    namespace: dict = {}
    exec(
        compile(_python_block("Add the callback to your own Trainer"), "README", "exec"), namespace
    )
    metrics = namespace["trainer"].callback_metrics
    assert float(metrics["coherence/D4/ratio/e"]) == 1.0  # ρ(e) = 1 by definition
    ratios = [
        float(metrics[f"coherence/D4/ratio/{g}"])
        for g in ("r", "r2", "r3", "s", "sr", "sr2", "sr3")
    ]
    orbit = float(metrics["coherence/D4/orbit"])
    assert orbit == pytest.approx(sum(ratios) / len(ratios))  # mean of ρ(g) over g ≠ e
    transfers = [float(metrics[f"coherence/D4/transfer/{g}"]) for g in ("r", "r2", "r3", "s")]
    transfers += [float(metrics[f"coherence/D4/transfer/{g}"]) for g in ("sr", "sr2", "sr3")]
    assert float(metrics["basin/D4/compatibility"]) == pytest.approx(min(transfers))  # min τ(g)
    assert list((tmp_path / "runs" / "my_run").glob("version_0/events.out.tfevents.*"))
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("tensor(")


def test_groups_example_runs():
    namespace: dict = {}
    exec(compile(_python_block("Symmetry groups and field types"), "README", "exec"), namespace)
    assert tuple(namespace["orbit"].shape) == (8, 8, 2, 64, 64)


@pytest.mark.parametrize(
    "command", ["symcoherence fit --config configs/quickstart.yaml", "python -m pytest"]
)
def test_the_first_two_commands_lead_the_readme(command):
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    assert command in first_block
