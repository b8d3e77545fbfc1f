"""--report_to: the same scalars as metrics.jsonl reach wandb (offline mode) and MLflow (a file store)."""
from __future__ import annotations

import json

import pytest

from tests.helpers.distributed import REPO_ROOT, run_distributed
from tests.scripts.fixture_dataset import build_dataset


def test_wandb_offline_and_mlflow_file_store_get_the_metrics(tmp_path, tiny_tokenizer_dir, tiny_model_dir):
    pytest.importorskip("wandb")
    mlflow = pytest.importorskip("mlflow")
    data = build_dataset(tiny_tokenizer_dir, tmp_path / "data", max_length=64, num_parts=1)
    run_distributed(REPO_ROOT / "train.py", [
        "--pretrained", tiny_model_dir, "--dataset", data, "--plugin", "ddp", "--max_length", 64, "--max_steps", 3,
        "--no_save", "--tensorboard_dir", tmp_path / "tb", "--config_file", tmp_path / "c.json",
        "--padding_mode", "longest", "--report_to", "tensorboard,wandb,mlflow"],
        env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"}, timeout=300)
    rows = [json.loads(line) for line in (tmp_path / "tb" / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    assert sorted(losses) == [1, 2, 3]

    import os

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.tracking.MlflowClient(tracking_uri=(tmp_path / "tb" / "mlruns").resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "colossal-llama2"]
    (run,) = client.search_runs([experiment.experiment_id])
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss")}
    assert history == pytest.approx(losses) and run.data.params["plugin"] == "ddp"

    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    (offline,) = list((tmp_path / "tb" / "wandb").glob("offline-run-*"))
    assert wandb_history(offline, "loss") == pytest.approx(losses)


def wandb_history(run_dir, key: str) -> dict[int, float]:
    """The logged values of ``key`` by step, read from an offline run's .wandb file: a 7-byte header, then
    protobuf ``Record``s in LevelDB's log format (32 KiB blocks; records of 7-byte header, whole or in pieces)."""
    from wandb.proto import wandb_internal_pb2

    data = next(run_dir.glob("*.wandb")).read_bytes()
    found, pos, pieces = {}, 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        payload, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pieces = payload if kind in (1, 2) else pieces + payload
        if kind not in (1, 4):
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pieces)
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            if key in items:
                found[int(items["_step"])] = items[key]
    return found


def test_unknown_or_missing_trackers_are_refused():
    from colossal_llama2.training.trackers import parse_report_to
    from colossal_llama2.utils.errors import UserInputError

    with pytest.raises(UserInputError, match="--report_to: unknown tracker 'comet'"):
        parse_report_to("tensorboard,comet")
    assert parse_report_to("") == []
