"""What validate checks of model.source before DVC removes anything (issue 41): the
config.json transformers will read, the safetensors headers (no weights are loaded), and
lora.r against the model's hidden size. Hand-made model directories: no torch here."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
import yaml

from conftest import with_value
from spelltune.params import ParamsError
from spelltune.training.preflight import check

LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 32, "vocab_size": 8}


def safetensors_bytes(tensors: dict[str, tuple[str, list[int]]], sizes: dict[str, int] | None = None) -> bytes:
    """A safetensors file: 8-byte header length, JSON header, then the tensors' bytes."""
    sizes = sizes or {"F32": 4, "BF16": 2, "I64": 8}
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, (dtype, shape) in tensors.items():
        n = sizes[dtype]
        for dim in shape:
            n *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"\0" * offset


def model_dir(root: Path, config: dict | str = LLAMA, weights: bytes | None = None, name: str = "m") -> Path:
    path = root / name
    path.mkdir()
    (path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    (path / "model.safetensors").write_bytes(
        safetensors_bytes({"w": ("F32", [4, 8]), "b": ("BF16", [3])}) if weights is None else weights)
    return path


def check_with(tmp_path: Path, source: Path, **lora) -> None:
    raw = with_value("model.source", str(source))
    raw["lora"].update(lora)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    check(params)


def refusal(tmp_path: Path, source: Path, **lora) -> str:
    with pytest.raises(ParamsError) as err:
        check_with(tmp_path, source, **lora)
    line = str(err.value)
    assert "\n" not in line
    return line


def test_a_sound_model_directory_passes(tmp_path):
    check_with(tmp_path, model_dir(tmp_path))
    check_with(tmp_path, model_dir(tmp_path, name="r32"), r=32)  # r up to the hidden size


def test_validate_reads_no_weights_and_imports_no_torch(tmp_path):
    """The header checks stay cheap: validate on a model directory imports neither torch
    nor transformers (model types are read from transformers' generated mapping file)."""
    import subprocess

    source = model_dir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_value("model.source", str(source))))
    code = "import sys; from spelltune.training.preflight import check; check(); print(sorted(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    modules = set(eval(done.stdout))
    assert "torch" not in modules and "transformers" not in modules


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ('{"model_type": "llama", "hidden_', "config.json: not valid JSON (Unterminated string starting at: "
                                            "line 1 column 25)"),
        ("[1, 2]", "config.json: expected a JSON object, got list"),
        ({"hidden_size": 32}, "config.json: no model_type"),
        ({**LLAMA, "model_type": "no_such_model"},
         "config.json: model_type = 'no_such_model': unknown to transformers"),
        ({**LLAMA, "model_type": "t5"}, "config.json: model_type = 't5': not a causal language model"),
    ],
    ids=["truncated", "not-an-object", "no-model-type", "unknown-type", "not-causal-lm"],
)
def test_a_config_json_transformers_cannot_load_is_one_line(tmp_path, config, expected):
    source = model_dir(tmp_path, config)
    line = refusal(tmp_path, source)
    assert line.startswith(f"{tmp_path}/params.yaml: model.source = {str(source)!r}: {source}/"), line
    assert expected in line, line
    assert "allowed: a model directory that transformers' AutoModelForCausalLM loads" in line


def corrupt(kind: str) -> tuple[bytes, str]:
    good = safetensors_bytes({"w": ("F32", [4, 8]), "b": ("BF16", [3])})
    if kind == "truncated":
        return good[: len(good) - 10], "truncated: its tensors need 134 bytes after the header, the file holds 124"
    if kind == "too-short":
        return b"\x01\x02", "not a safetensors file (2 bytes)"
    if kind == "header-length":
        return struct.pack("<Q", 10**12) + good[8:], "not a safetensors file (a header of 1,000,000,000,000 bytes"
    if kind == "header-not-json":
        return struct.pack("<Q", 8) + b"\xff" * 8 + b"\0" * 16, "its header is not JSON"
    if kind == "sizes":
        wrong = safetensors_bytes({"w": ("F32", [4, 8])})
        return wrong.replace(b"[4, 8]", b"[4, 9]"), "tensor 'w' (F32 [4, 9]) takes 144 bytes, its offsets give 128"
    if kind == "gap":
        wrong = safetensors_bytes({"w": ("F32", [4, 8])})
        return wrong.replace(b"[0, 128]", b"[8, 136]") + b"\0" * 8, "tensor 'w' starts at byte 8, not 0"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["truncated", "too-short", "header-length", "header-not-json", "sizes", "gap"])
def test_a_corrupt_safetensors_is_one_line(tmp_path, kind):
    weights, expected = corrupt(kind)
    source = model_dir(tmp_path, weights=weights)
    line = refusal(tmp_path, source)
    assert f": {source}/model.safetensors: " in line and expected in line, line


def test_a_sharded_model_names_its_missing_shard_and_a_model_without_weights_says_so(tmp_path):
    source = model_dir(tmp_path)
    (source / "model.safetensors").rename(source / "model-00001-of-00002.safetensors")
    (source / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "w": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    assert "model.safetensors.index.json names model-00002-of-00002.safetensors, which is not there" in refusal(
        tmp_path, source)
    (source / "model.safetensors.index.json").unlink()
    (source / "model-00001-of-00002.safetensors").unlink()
    assert "no weights (no *.safetensors or pytorch_model*.bin)" in refusal(tmp_path, source)


def test_lora_r_above_the_hidden_size_is_refused(tmp_path):
    source = model_dir(tmp_path)
    line = refusal(tmp_path, source, r=33)
    assert line == (f"{tmp_path}/params.yaml: lora.r = 33: must be <= 32, the hidden size of the base model "
                    f"({source}/config.json): a LoRA update has at most that rank")
    # a value no model has: the schema's own bound, whatever the model
    huge = refusal(tmp_path, source, r=99999999999999999999)
    assert huge == f"{tmp_path}/params.yaml: lora.r = 99999999999999999999: Input should be less than or equal to 4096"


def test_lora_r_of_the_embedded_model_is_bounded_by_its_hidden_size(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(with_value("lora.r", 577)))
    with pytest.raises(ParamsError) as err:
        check(params)
    assert "lora.r = 577: must be <= 576, the hidden size of the base model (SmolLM2-135M-Instruct" in str(err.value)
