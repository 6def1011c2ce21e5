"""A plug-in that breaks the Strategy contract fails with the rule it broke, and the CLI's
failed-run line says where the traceback is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lifelong.cli import EXIT_UNFINISHED, main
from lifelong.composition.plan import plan_runs
from lifelong.execution.runner import execute

SMALL = {"samples_per_task": 64, "n_tasks": 2, "eval_every": 0}

PLUGIN = '''
from dataclasses import dataclass, field
from typing import ClassVar
import torch
import torch.nn.functional as F
from lifelong import Strategy


@dataclass
class Broken(Strategy):
    """Learns with SGD, but returns RETURNED from train_step and PREDICTED from predict."""
    name: ClassVar[str] = "broken"
    model: torch.nn.Module = field(init=False)

    def setup(self, model, info, generator):
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def train_step(self, batch):
        self.optimizer.zero_grad()
        losses = F.cross_entropy(self.model(batch.x, batch.task_ids), batch.y, reduction="none")
        losses.mean().backward()
        self.optimizer.step()
        return RETURNED

    def predict(self, x, task_ids):
        logits = self.model(x, task_ids)
        return PREDICTED
'''


def broken(
    tmp_path: Path, returned: str = "losses.mean().detach()", predicted: str = "logits"
) -> str:
    path = tmp_path / "broken.py"
    path.write_text(PLUGIN.replace("RETURNED", returned).replace("PREDICTED", predicted))
    return f"{path}:Broken"


@pytest.mark.parametrize(
    ("returned", "predicted", "message"),
    [
        (
            "losses.mean().item()",
            "logits",
            "train_step must return a scalar loss tensor; got float",
        ),
        ("None", "logits", "train_step must return a scalar loss tensor; got NoneType"),
        (
            "losses.detach()",
            "logits",
            "train_step must return a scalar loss tensor; got shape [32]",
        ),
        ("losses.mean().detach()", "logits.argmax(1)", "predict must return float scores of shape"),
    ],
)
def test_a_broken_rule_is_named(
    tmp_path: Path, returned: str, predicted: str, message: str
) -> None:
    from lifelong import ContractError

    (spec,) = plan_runs("split-mnist", [broken(tmp_path, returned, predicted)], [0], SMALL)
    with pytest.raises(ContractError, match=message.replace("[", r"\[").replace("]", r"\]")):
        execute(spec, spec.scenario.build(0), torch.device("cpu"))


def test_a_well_behaved_variant_passes(tmp_path: Path) -> None:
    (spec,) = plan_runs("split-mnist", [broken(tmp_path)], [0], SMALL)
    assert execute(spec, spec.scenario.build(0), torch.device("cpu")).ok


def test_the_failed_run_line_says_where_the_traceback_is(tmp_path: Path, capsys) -> None:
    args = ["run", "split-mnist", "-s", broken(tmp_path, "None"), "--quiet", "--jobs", "1"]
    args += [f"--set={k}={v}" for k, v in SMALL.items()]
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == EXIT_UNFINISHED
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("lifelong: broken seed 0 failed: lifelong.errors.ContractError: ")
    assert line.endswith(f'(traceback: the "error" of this run in {out / "summary.json"})')
    (run,) = json.loads((out / "summary.json").read_text())["runs"]
    assert run["error"].startswith("Traceback") and "train_step must return" in run["error"]
    assert main(args) == EXIT_UNFINISHED  # no --out: the traceback is printed above the line
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("Traceback") and err[-1].endswith(
        "(traceback above; with --out DIR it is kept in DIR/summary.json)"
    )
