"""Colossal-LLaMA-2: continual pre-training of LLaMA-family models on Colossal-AI.

Dependencies, and why colossalai is an extra rather than a hard requirement:
colossalai 0.5.0 pins ``torch<=2.5.1``. If it sat in ``install_requires``, pip would resolve that pin
even when colossalai is already installed and replace the user's torch (and pull GBs of CUDA wheels).
``make install`` therefore installs colossalai with ``--no-deps`` plus the packages it imports
(see ``scripts/install.sh``); ``pip install -e .[colossalai]`` is there for users who want pip to
resolve colossalai's own pins. ``torch`` itself is never pinned here: bring your own build.
"""
from setuptools import find_packages, setup

install_requires = [
    "torch>=2.2",
    # Two stacks, pinned by scripts/install.sh (TRANSFORMERS=4 or 5; README: Install): 4.51.3 is colossalai
    # 0.5.0's pin and runs every plugin; transformers 5 knows the families released since.
    "transformers>=4.51.3,<6",
    "tokenizers>=0.21,<0.24",
    "datasets>=2.19",
    "pyarrow>=14",
    "zstandard",  # .jsonl.zst corpora
    "sentencepiece>=0.1.99",
    "protobuf>=3.20",
    "safetensors>=0.4",
    "tensorboard>=2.14",
    "tqdm",
    "numpy",
    "psutil",
]

# What colossalai 0.5.0 imports at `import colossalai.booster` time, installed by make install next to
# `colossalai --no-deps`. Kept here so there is one list (scripts/install.sh reads it).
colossalai_runtime = [
    "packaging",
    "rich",
    "click",
    "fabric",
    "contexttimer",
    "ninja",
    "einops",
    "pydantic",
    "peft>=0.7.1",  # <=0.13.2 with transformers 4.51.3, >=0.18 with 5 (scripts/install.sh pins it)
    "bitsandbytes>=0.39.0",
]

setup(
    name="colossal_llama2",
    version="0.1.0",
    description="Continual pre-training of LLaMA-family models on Colossal-AI: vocabulary extension, "
    "data preparation, Booster training, inference.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["colossal_llama2", "colossal_llama2.*"]),
    install_requires=install_requires,
    entry_points={"console_scripts": ["colossal-llama2=colossal_llama2.cli:console"]},
    extras_require={
        "colossalai": ["colossalai==0.5.0"] + colossalai_runtime,
        "colossalai-runtime": colossalai_runtime,
        "flash-attn": ["flash-attn>=2.5"],
        # liger-kernel's Triton kernels (--fused_ops liger, --fused_loss linear; the CUDA default for zero2).
        # 0.7 and later need transformers >= 4.52, and colossalai 0.5.0 pins 4.51.3.
        # torchao: float8 training (--fp8 tensorwise/rowwise).
        "gpu": ["liger-kernel>=0.6.5,<0.7", "torchao>=0.18"],
        # --report_to wandb,mlflow
        "trackers": ["wandb", "mlflow-skinny"],
        "dev": ["pytest>=7", "pytest-xdist", "matplotlib"],
    },
    license="Apache-2.0",
)
