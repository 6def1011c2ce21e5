"""One sink per tracker; each writes under the results directory with its own library.

``OUT/tensorboard/RUN`` (``tensorboard --logdir OUT/tensorboard``), ``OUT/wandb``
(W&B, offline unless ``WANDB_MODE`` says otherwise; ``wandb sync`` uploads it) and
``OUT/mlruns`` (MLflow's local file store, one experiment per group).
"""

from __future__ import annotations

import abc
import io
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

from lifelong.errors import UserError
from lifelong.evaluation.results_dir import check_out_dir
from lifelong.trackers.record import RunRecord

__all__ = ["SINKS", "MlflowSink", "Sink", "TensorBoardSink", "WandbSink"]


class Sink(abc.ABC):
    """A tracker writing under ``out/<folder>``; checked writable when opened."""

    name: ClassVar[str]
    folder: ClassVar[str]

    def __init__(self, out: Path, group: str) -> None:
        self.root = out / self.folder
        self.group = group
        try:
            check_out_dir(self.root)
        except UserError:
            raise UserError(
                f"--log {self.name}: cannot write to {self.root}; fix its permissions or "
                "choose another --out"
            ) from None

    @abc.abstractmethod
    def log(self, record: RunRecord) -> None:
        """Write one run; raise on any failure (the caller reports it in one line)."""


class TensorBoardSink(Sink):
    """Event files, one directory per run, read by ``tensorboard --logdir``."""

    name = "tensorboard"
    folder = "tensorboard"

    def log(self, record: RunRecord) -> None:
        import numpy as np
        from PIL import Image
        from torch.utils.tensorboard import SummaryWriter

        path = self.root / record.name
        path.mkdir(parents=True, exist_ok=True)
        with SummaryWriter(str(path)) as writer:
            for tag, step, value in record.scalars:
                writer.add_scalar(tag, value, step)
            for name, png in record.figures.items():
                image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
                tag = f"figures/{name.removesuffix('.png')}"
                writer.add_image(tag, image, record.final_step, dataformats="HWC")
            writer.add_text("summary", f"    {record.summary}".replace("\n", "\n    "))
            metrics = {f"metrics/{k}": v for k, v in record.metrics.items()}
            writer.add_hparams(record.params, metrics, run_name=".")
        (path / "summary.json").write_text(record.summary + "\n")


class WandbSink(Sink):
    """A W&B run per lifelong run, grouped by sweep, in ``OUT/wandb``."""

    name = "wandb"
    folder = "wandb"

    def log(self, record: RunRecord) -> None:
        import wandb
        from PIL import Image

        run = wandb.init(
            dir=str(self.root.parent),  # W&B adds the wandb/ folder itself
            project=os.environ.get("WANDB_PROJECT") or "lifelong",
            group=self.group,
            name=record.name,
            config=record.params,
            mode=os.environ.get("WANDB_MODE") or "offline",  # type: ignore[arg-type,unused-ignore]
            reinit="create_new",
            settings=wandb.Settings(
                silent=True, console="off", x_disable_stats=True, disable_git=True, save_code=False
            ),
        )
        try:
            by_step: dict[int, dict[str, Any]] = defaultdict(dict)
            for tag, step, value in record.scalars:
                by_step[step][tag] = value
            for step in sorted(by_step):
                run.log(by_step[step], step=step)
            images = {
                f"figures/{name.removesuffix('.png')}": wandb.Image(Image.open(io.BytesIO(png)))
                for name, png in record.figures.items()
            }
            run.log(
                {**{f"metrics/{k}": v for k, v in record.metrics.items()}, **images},
                step=record.final_step,
            )
            run.summary.update(record.metrics)
            with tempfile.TemporaryDirectory() as tmp:
                summary = Path(tmp) / "summary.json"
                summary.write_text(record.summary + "\n")
                artifact = wandb.Artifact(f"summary-{record.key}", type="lifelong-run")
                artifact.add_file(str(summary))
                run.log_artifact(artifact)
                run.finish(exit_code=0 if record.status == "ok" else 1)
        except BaseException:
            run.finish(exit_code=1)
            raise


class MlflowSink(Sink):
    """An MLflow run per lifelong run in the local file store ``OUT/mlruns``."""

    name = "mlflow"
    folder = "mlruns"
    BATCH = 1000  # MLflow's limit on metrics per log_batch call (params: 100)

    def log(self, record: RunRecord) -> None:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for opt-in
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param

        client = MlflowClient(tracking_uri=self.root.resolve().as_uri())
        found = client.get_experiment_by_name(self.group)
        experiment = found.experiment_id if found else client.create_experiment(self.group)
        tags = {"lifelong.key": record.key, "lifelong.status": record.status}
        run_id = client.create_run(experiment, run_name=record.name, tags=tags).info.run_id
        try:
            now = int(time.time() * 1000)
            params = [Param(k, str(v)[:500]) for k, v in record.params.items()]
            metrics = [Metric(tag, value, now, step) for tag, step, value in record.scalars]
            metrics += [Metric(k, v, now, record.final_step) for k, v in record.metrics.items()]
            for i in range(0, len(params), 100):
                client.log_batch(run_id, params=params[i : i + 100])
            for i in range(0, len(metrics), self.BATCH):
                client.log_batch(run_id, metrics=metrics[i : i + self.BATCH])
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "summary.json").write_text(record.summary + "\n")
                client.log_artifact(run_id, str(Path(tmp) / "summary.json"))
                for name, png in record.figures.items():
                    (Path(tmp) / name).write_bytes(png)
                    client.log_artifact(run_id, str(Path(tmp) / name), "figures")
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED" if record.status == "ok" else "FAILED")


SINKS: dict[str, type[Sink]] = {
    sink.name: sink for sink in (TensorBoardSink, WandbSink, MlflowSink)
}
