"""``python -m colossal_llama2 <stage> [flags]`` (and ``torchrun -m colossal_llama2 train ...``)."""
from colossal_llama2.cli import console

console()
