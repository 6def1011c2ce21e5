"""lifelong.check_strategy: the public conformance helper of docs/plugin-guide.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import lifelong
from lifelong import ConformanceError, UserError

ROOT = Path(__file__).resolve().parent.parent
BROKEN = '''
import random
from dataclasses import dataclass
from typing import ClassVar

import torch

from lifelong import SGD, Strategy, param, supervised_step

RUNS = [0]


@dataclass
class Base(Strategy):
    name: ClassVar[str] = "base"
    lr: float = param(0.1, "step size", gt=0)

    def setup(self, model, info, generator):
        self.model, self.optimizer = model, SGD(model.parameters(), lr=self.lr)

    def train_step(self, batch):
        return supervised_step(self.model, self.optimizer, batch)

    def predict(self, x, task_ids):
        return self.model(x, task_ids)


@dataclass
class Leaky(Base):
    """Every other run learns nothing: state shared between runs."""

    name: ClassVar[str] = "leaky"

    def setup(self, model, info, generator):
        RUNS[0] += 1
        super().setup(model, info, generator)

    def train_step(self, batch):
        if RUNS[0] % 2:
            return torch.zeros(())
        return supervised_step(self.model, self.optimizer, batch)


@dataclass
class LateOptimizer(Base):
    """Builds its optimiser in before_task, where a checkpoint cannot restore it."""

    name: ClassVar[str] = "late"

    def setup(self, model, info, generator):
        self.model = model

    def before_task(self, data):
        if data.id == 0:
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=0.9)


@dataclass
class PythonRandom(Base):
    """Keeps its randomness in random.Random, which no checkpoint holds."""

    name: ClassVar[str] = "pyrandom"

    def setup(self, model, info, generator):
        super().setup(model, info, generator)
        self.rng = random.Random(0)


@dataclass
class WrongLogits(Base):
    name: ClassVar[str] = "wrong"

    def predict(self, x, task_ids):
        return self.model(x, task_ids)[:, :1]


@dataclass
class AttachedLoss(Base):
    name: ClassVar[str] = "attached"

    def train_step(self, batch):
        loss = torch.nn.functional.cross_entropy(self.model(batch.x, batch.task_ids), batch.y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss
'''


@pytest.fixture(scope="module")
def plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plugins") / "broken.py"
    path.write_text(BROKEN)
    return path


def test_the_readme_plugin_passes(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    (plugin,) = [
        b
        for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S)
        if b.startswith("# my_strategy.py")
    ]
    (tmp_path / "my_strategy.py").write_text(plugin)
    lifelong.check_strategy(f"{tmp_path}/my_strategy.py:LabelSmoothing", {"smooth.smoothing": 0.2})


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        ("Leaky", "the same seed gave other results"),
        ("LateOptimizer", "cannot be resumed from"),
        ("PythonRandom", "cannot be checkpointed"),
        ("WrongLogits", r"predict returned \(8, 1\), not logits"),
        ("AttachedLoss", "detached 0-d tensor"),
    ],
)
def test_a_broken_plugin_fails_naming_the_property(plugins: Path, cls: str, message: str) -> None:
    with pytest.raises(ConformanceError, match=message) as error:
        lifelong.check_strategy(f"{plugins}:{cls}", setting_names=("class",))
    assert "(class-incremental)" in str(error.value)


def test_a_class_that_is_no_strategy_is_a_user_error(plugins: Path) -> None:
    with pytest.raises(UserError, match="defines no class"):
        lifelong.check_strategy(f"{plugins}:Nothing")
