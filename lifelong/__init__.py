"""lifelong: a continual-learning simulator.

A stream of tasks is fed to a strategy; the evaluator records the accuracy matrix R, the
init row b, curves and the metrics derived from them.
"""

from lifelong.api import run
from lifelong.compose import Composite, compose
from lifelong.errors import ContractError, UserError
from lifelong.functional import Params, loss_fn, meta_gradient, sgd_inner_loop
from lifelong.init_axis import Init
from lifelong.meta_tasks import MetaTaskSource, concat_batches
from lifelong.metatrain import MetaInit, MetaStart
from lifelong.optim import SGD
from lifelong.params import param
from lifelong.parts import (
    Learner,
    Memory,
    Objective,
    Quadratic,
    Regularizer,
    Replay,
    Step,
    apply_gradients,
    detached,
    fisher_diagonal,
    gradient_importance,
    gradients,
    quadratic_penalty,
    task_sample,
)
from lifelong.protocol import Protocol
from lifelong.result import Curve, RunResult
from lifelong.scenario import (
    DrawnTransform,
    ImageScenario,
    ScenarioFamily,
    Transform,
    make_task,
    subsample,
    transformed_stream,
)
from lifelong.strategy import Batch, Strategy, StreamInfo, supervised_step
from lifelong.stream import Stream, Task, TrainingData

__all__ = [
    "SGD",
    "Batch",
    "Composite",
    "ContractError",
    "Curve",
    "DrawnTransform",
    "ImageScenario",
    "Init",
    "Learner",
    "Memory",
    "MetaInit",
    "MetaStart",
    "MetaTaskSource",
    "Objective",
    "Params",
    "Protocol",
    "Quadratic",
    "Regularizer",
    "Replay",
    "RunResult",
    "ScenarioFamily",
    "Step",
    "Strategy",
    "Stream",
    "StreamInfo",
    "Task",
    "TrainingData",
    "Transform",
    "UserError",
    "apply_gradients",
    "compose",
    "concat_batches",
    "detached",
    "fisher_diagonal",
    "gradient_importance",
    "gradients",
    "loss_fn",
    "make_task",
    "meta_gradient",
    "param",
    "quadratic_penalty",
    "run",
    "sgd_inner_loop",
    "subsample",
    "supervised_step",
    "task_sample",
    "transformed_stream",
]

__version__ = "0.1.0"
