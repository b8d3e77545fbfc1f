"""Where a run's metrics go besides ``metrics.jsonl`` (always written): ``--report_to tensorboard,wandb,mlflow``.

Each tracker gets the same scalars as metrics.jsonl, from rank 0. wandb and MLflow are optional (``pip install -e
.[trackers]``) and follow their own environment: ``WANDB_MODE=offline``, ``WANDB_PROJECT``; ``MLFLOW_TRACKING_URI``
(default: a file store ``<tensorboard_dir>/mlruns``), ``MLFLOW_EXPERIMENT_NAME``.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..utils.errors import UserInputError

TRACKERS = ("tensorboard", "wandb", "mlflow")
PROJECT = "colossal-llama2"


def parse_report_to(value: str) -> list[str]:
    """``--report_to`` as names, each known and importable; one error naming the flag otherwise."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    for name in names:
        if name not in TRACKERS:
            raise UserInputError(f"unknown tracker {name!r} (choose from {', '.join(TRACKERS)})", where="--report_to")
        package = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}[name]
        if importlib.util.find_spec(package) is None:
            raise UserInputError(f"{name} is not installed (pip install -e .[trackers])", where="--report_to")
    return names


def _scalars(values: dict) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "epoch")}


class TensorBoard:
    def __init__(self, directory: Path, run_name: str, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(directory))

    def log(self, step: int, values: dict) -> None:
        for key, value in _scalars(values).items():
            self.writer.add_scalar(key if "/" in key else f"train/{key}", value, step)

    def close(self) -> None:
        self.writer.close()


class Wandb:
    def __init__(self, directory: Path, run_name: str, config: dict):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", PROJECT), name=run_name, dir=str(directory),
                              config=config, reinit=True)

    def log(self, step: int, values: dict) -> None:
        self.run.log(_scalars(values), step=step)

    def close(self) -> None:
        self.run.finish()


class Mlflow:
    def __init__(self, directory: Path, run_name: str, config: dict):
        import mlflow

        self.mlflow = mlflow
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # a file store beside the metrics: no server, no database (MLflow 3 asks to be told so)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (directory / "mlruns").resolve().as_uri()
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT))
        mlflow.start_run(run_name=run_name)
        mlflow.log_params({k: str(v)[:500] for k, v in config.items()})

    def log(self, step: int, values: dict) -> None:
        self.mlflow.log_metrics(_scalars(values), step=step)

    def close(self) -> None:
        self.mlflow.end_run()


def open_trackers(names: list[str], directory: Path, run_name: str, config: dict) -> list:
    kinds = {"tensorboard": TensorBoard, "wandb": Wandb, "mlflow": Mlflow}
    return [kinds[name](directory, run_name, config) for name in names]
