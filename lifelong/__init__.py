"""lifelong: a continual-learning simulator.

A stream of tasks is fed to a strategy; the evaluator records the accuracy matrix R, the
init row b, curves and the metrics derived from them.
"""

from lifelong.api import report, run, save
from lifelong.composition.compose import Composite, compose
from lifelong.contracts.conformance import ConformanceError, check_strategy
from lifelong.contracts.head_axis import Head, class_means, feature_dim, features
from lifelong.contracts.init_axis import Init
from lifelong.contracts.params import MAX_SEED, param
from lifelong.contracts.parts import (
    Learner,
    Memory,
    Objective,
    Quadratic,
    QuadraticRegularizer,
    Regularizer,
    Replay,
    Step,
    UnformedGradients,
    apply_gradients,
    detached,
    eval_mode,
    fisher_diagonal,
    fisher_labels,
    gradient_importance,
    gradients,
    quadratic_penalty,
    task_sample,
)
from lifelong.contracts.scenario import (
    ClassSplitImages,
    DrawnTransform,
    ImageScenario,
    ScenarioFamily,
    Transform,
    make_task,
    subsample,
    transformed_footprint,
    transformed_stream,
)
from lifelong.contracts.strategy import Batch, Strategy, StreamInfo, supervised_step
from lifelong.contracts.stream import SETTINGS, Setting, Stream, Task, TrainingData
from lifelong.data.images import ImageDataset, load_image_dataset
from lifelong.data.inputs import InputTransform, to_floats
from lifelong.data.own_data import OwnData, from_arrays
from lifelong.data.own_scenario import OwnDataScenario, scenario_from
from lifelong.data.own_sources import from_folder, from_torch
from lifelong.data.stream_options import StreamOptions
from lifelong.errors import ContractError, UserError
from lifelong.evaluation.result import Curve, RunResult
from lifelong.execution.protocol import Protocol
from lifelong.meta.meta_tasks import MetaTaskSource, concat_batches
from lifelong.meta.metatrain import MetaInit, MetaStart
from lifelong.models.mlp import MLP, ClosedFormModel, head_logits
from lifelong.training.functional import Params, loss_fn, meta_gradient, sgd_inner_loop
from lifelong.training.optim import SGD

__all__ = [
    "MAX_SEED",
    "MLP",
    "SETTINGS",
    "SGD",
    "Batch",
    "ClassSplitImages",
    "ClosedFormModel",
    "Composite",
    "ConformanceError",
    "ContractError",
    "Curve",
    "DrawnTransform",
    "Head",
    "ImageDataset",
    "ImageScenario",
    "Init",
    "InputTransform",
    "Learner",
    "Memory",
    "MetaInit",
    "MetaStart",
    "MetaTaskSource",
    "Objective",
    "OwnData",
    "OwnDataScenario",
    "Params",
    "Protocol",
    "Quadratic",
    "QuadraticRegularizer",
    "Regularizer",
    "Replay",
    "RunResult",
    "ScenarioFamily",
    "Setting",
    "Step",
    "Strategy",
    "Stream",
    "StreamInfo",
    "StreamOptions",
    "Task",
    "TrainingData",
    "Transform",
    "UnformedGradients",
    "UserError",
    "apply_gradients",
    "check_strategy",
    "class_means",
    "compose",
    "concat_batches",
    "detached",
    "eval_mode",
    "feature_dim",
    "features",
    "fisher_diagonal",
    "fisher_labels",
    "from_arrays",
    "from_folder",
    "from_torch",
    "gradient_importance",
    "gradients",
    "head_logits",
    "load_image_dataset",
    "loss_fn",
    "make_task",
    "meta_gradient",
    "param",
    "quadratic_penalty",
    "report",
    "run",
    "save",
    "scenario_from",
    "sgd_inner_loop",
    "subsample",
    "supervised_step",
    "task_sample",
    "to_floats",
    "transformed_footprint",
    "transformed_stream",
]

__version__ = "0.1.0"
