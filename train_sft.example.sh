#!/usr/bin/env bash
# Supervised fine-tuning with train.py (gradient accumulation + NEFTune). Copy to train.sh, edit the values below (or override any of them
# from the environment, e.g. `PLUGIN=zero2 NPROC_PER_NODE=4 bash train.sh`), then run `bash train.sh`.
set -euo pipefail
cd "$(dirname "$0")"

PROJECT_NAME="${PROJECT_NAME:-colossal-llama2-sft}"
PARENT_SAVE_DIR="${PARENT_SAVE_DIR:-checkpoints}"               # checkpoints: $PARENT_SAVE_DIR/$FULL_PROJECT_NAME/
PARENT_TENSORBOARD_DIR="${PARENT_TENSORBOARD_DIR:-tensorboard}" # tensorboard events + metrics.jsonl
PARENT_CONFIG_FILE="${PARENT_CONFIG_FILE:-configs}"             # the run's arguments as JSON
PRETRAINED_MODEL_PATH="${PRETRAINED_MODEL_PATH:-/path/to/grown/model}"
NPROC_PER_NODE="${NPROC_PER_NODE:-8}"
HOSTFILE="${HOSTFILE-hostfile}"   # set HOSTFILE= (empty) to run on this machine only
MASTER_PORT="${MASTER_PORT:-30013}"
PLUGIN="${PLUGIN:-auto}"            # auto: zero2 where it fits (python -m colossal_llama2.plan shows the choice)
MAX_LENGTH="${MAX_LENGTH:-4096}"
MICRO_BATCH_SIZE="${MICRO_BATCH_SIZE:-1}"
LR="${LR:-2e-5}"
ACCUMULATION_STEPS="${ACCUMULATION_STEPS:-8}"
NUM_EPOCHS="${NUM_EPOCHS:-1}"
SAVE_INTERVAL="${SAVE_INTERVAL:-1000}"
MIXED_PRECISION="${MIXED_PRECISION:-bf16}"
WEIGHT_DECAY="${WEIGHT_DECAY:-0.01}"
WARMUP_STEPS="${WARMUP_STEPS:-100}"
# More train.py flags. Add --use_grad_checkpoint only when the model does not fit without it, and --use_flash_attn
# only on GPUs before Hopper (on sm >= 9.0 it replaces the faster cuDNN kernel): docs/benchmarks.md#what-to-pick.
EXTRA_ARGS="${EXTRA_ARGS:-}"

# Every prepared part (the output dirs of prepare_sft_dataset.py --data_arrow_output_dir).
if [[ -n "${DATASET_DIRS:-}" ]]; then
    read -r -a dataset <<< "$DATASET_DIRS"
else
    declare -a dataset=(
        "/path/to/arrow/part-00000"
        "/path/to/arrow/part-00001"
        "/path/to/arrow/part-00002"
    )
fi

TIMESTAMP=$(date +%Y-%m-%d-%H-%M-%S)
FULL_PROJECT_NAME="${PROJECT_NAME}-${TIMESTAMP}"
SAVE_DIR="${PARENT_SAVE_DIR}/${FULL_PROJECT_NAME}"
TENSORBOARD_DIR="${PARENT_TENSORBOARD_DIR}/${FULL_PROJECT_NAME}"
CONFIG_FILE="${PARENT_CONFIG_FILE}/${FULL_PROJECT_NAME}.json"

# On Ctrl-C or a scheduler's SIGTERM, torchrun gives the workers this long to finish the step and save before
# it SIGKILLs them; torch's default, 30 s, is shorter than a large model's save (docs/training.md#stopping).
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-600}
# `python -m colossal_llama2.launch` in front: Ctrl-C or a scheduler's SIGTERM reaches only it, and it asks the
# training processes to finish the step, save and stop, so the launchers end normally (status 0, no traceback;
# docs/training.md#stopping). A second Ctrl-C ends everything at once; the newest complete checkpoint stays.
launcher=("${PYTHON:-python}" -m colossal_llama2.launch
          colossalai run --nproc_per_node "$NPROC_PER_NODE" --master_port "$MASTER_PORT")
[[ -n "$HOSTFILE" ]] && launcher+=(--hostfile "$HOSTFILE")
mp_args=()
[[ "$PLUGIN" != ddp ]] && mp_args=(--mixed_precision "$MIXED_PRECISION")

# shellcheck disable=SC2086  # EXTRA_ARGS is a list of flags
exec "${launcher[@]}" train.py \
    --pretrained "$PRETRAINED_MODEL_PATH" \
    --dataset "${dataset[@]}" \
    --plugin "$PLUGIN" \
    --save_interval "$SAVE_INTERVAL" \
    --save_dir "$SAVE_DIR" \
    --tensorboard_dir "$TENSORBOARD_DIR" \
    --config_file "$CONFIG_FILE" \
    --num_epochs "$NUM_EPOCHS" \
    --micro_batch_size "$MICRO_BATCH_SIZE" \
    --lr "$LR" \
    --max_length "$MAX_LENGTH" \
    --weight_decay "$WEIGHT_DECAY" \
    --warmup_steps "$WARMUP_STEPS" \
    --accumulation_steps "$ACCUMULATION_STEPS" \
    --use_neft \
    "${mp_args[@]}" \
    $EXTRA_ARGS
