#!/usr/bin/env bash
# Create (or reuse) the project's Python environment. Called by `make install`; safe to re-run:
# when nothing it depends on changed since the last success it returns in a few seconds.
#
#   VENV=.venv               where the virtualenv lives (created if missing)
#   PYTHON=/path/to/python   use this interpreter's environment instead of a virtualenv
#                            (GPU clusters: the python that already has your CUDA torch)
#   TORCH_SPEC=torch==2.13.0 what to install when no torch is importable (the CPU wheel on these machines)
#   TRANSFORMERS=4           which transformers stack (README: Installing):
#                              4  transformers 4.51.3, colossalai 0.5.0's pin: every plugin (3d included)
#                              5  the newest transformers 5: model families released since April 2025
#                            unset: the stack the environment already has (4 for a new one); re-running with
#                            the other value switches the environment in place.
#
# torch is installed only when none is importable, and then pinned for every later pip call, so no
# dependency can replace it. colossalai 0.5.0 pins torch<=2.5.1, which would pull GBs of CUDA wheels,
# so it is installed with --no-deps next to the packages it really imports (setup.py's
# `colossalai-runtime` extra).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
COLOSSALAI_SPEC=${COLOSSALAI_SPEC:-colossalai==0.5.0}

if [ -n "${PYTHON:-}" ]; then
  py=$PYTHON
else
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[install] creating virtualenv $VENV"
    python3 -m venv "$VENV"
  fi
  py=$VENV/bin/python
fi

stamp_dir=$("$py" -c 'import sys; print(sys.prefix)')
stamp=$stamp_dir/.colossal_llama2-install-stamp
stack_file=$stamp_dir/.colossal_llama2-transformers-stack
if [ -z "${TRANSFORMERS:-}" ]; then
  TRANSFORMERS=$(cat "$stack_file" 2>/dev/null || echo 4)
fi
case "$TRANSFORMERS" in
  # peft is imported by colossalai's booster: colossalai's own bound (0.13.2) with 4.51.3, a release made for
  # transformers 5 with 5.
  4) stack=("transformers==4.51.3" "tokenizers>=0.21,<0.22" "huggingface_hub<1" "peft==0.13.2") ;;
  5) stack=("transformers>=5,<6" "tokenizers>=0.22,<0.24" "huggingface_hub>=1,<3" "peft>=0.18") ;;
  *) echo "[install] TRANSFORMERS=$TRANSFORMERS: pick 4 (transformers 4.51.3, every plugin) or 5 (transformers 5)" >&2
     exit 2 ;;
esac
want=$( (cat setup.py pyproject.toml scripts/install.sh; echo "TRANSFORMERS=$TRANSFORMERS") | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && "$py" -c 'import torch, colossalai, transformers, datasets, colossal_llama2' >/dev/null 2>&1; then
  echo "[install] environment up to date ($("$py" -c 'import sys; print(sys.prefix)'))"
  exit 0
fi

pip_install() { "$py" -m pip install --disable-pip-version-check -q "$@" 2>&1 | grep -v "is ignored" || true; }

if ! "$py" -c 'import torch' >/dev/null 2>&1; then
  echo "[install] no torch importable: installing $TORCH_SPEC"
  pip_install "$TORCH_SPEC"
fi
torch_version=$("$py" -c 'import torch; print(torch.__version__)')
echo "[install] using torch $torch_version"
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==$torch_version" > "$constraints"
printf '%s\n' "${stack[@]}" >> "$constraints"
echo "[install] transformers stack $TRANSFORMERS: ${stack[*]}"

echo "[install] project, its dependencies and colossalai's runtime imports"
pip_install -c "$constraints" -e ".[colossalai-runtime,dev,trackers]"
echo "[install] $COLOSSALAI_SPEC and galore-torch without their pins"
pip_install -c "$constraints" --no-deps "$COLOSSALAI_SPEC" galore-torch
# torchao (the low-memory optimizers; fp8 on GPUs: `pip install -e .[gpu]` on a GPU machine) goes into a side
# directory here, not site-packages: transformers imports torchao whenever it is installed (about 1 s in every
# process), and only the tests of --optimizer adamw_bf16/adamw8bit need it (tests/helpers/optional.py).
echo "[install] torchao into $stamp_dir/torchao-for-tests (for the low-memory optimizer tests)"
pip_install --no-deps --upgrade --target "$stamp_dir/torchao-for-tests" "torchao==0.18.0"

"$py" - <<'PY'
import torch, colossalai, transformers, datasets, colossal_llama2
print(f"[install] ok: torch {torch.__version__}, colossalai {colossalai.__version__}, "
      f"transformers {transformers.__version__}, datasets {datasets.__version__}, "
      f"cuda available: {torch.cuda.is_available()}")
PY
echo "$TRANSFORMERS" > "$stack_file"
echo "$want" > "$stamp"
