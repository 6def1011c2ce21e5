"""lifelong: a continual-learning simulator.

A stream of tasks is fed to a strategy; the evaluator records the accuracy matrix R, the
init row b, curves and the metrics derived from them.
"""

from lifelong.api import run
from lifelong.errors import UserError
from lifelong.params import param
from lifelong.protocol import Protocol
from lifelong.result import Curve, RunResult
from lifelong.scenario import (
    ImageScenario,
    ScenarioFamily,
    make_task,
    subsample,
    transformed_stream,
)
from lifelong.strategy import Batch, Strategy, StreamInfo, supervised_step
from lifelong.stream import Stream, Task, TrainingData

__all__ = [
    "Batch",
    "Curve",
    "ImageScenario",
    "Protocol",
    "RunResult",
    "ScenarioFamily",
    "Strategy",
    "Stream",
    "StreamInfo",
    "Task",
    "TrainingData",
    "UserError",
    "make_task",
    "param",
    "run",
    "subsample",
    "supervised_step",
    "transformed_stream",
]

__version__ = "0.1.0"
