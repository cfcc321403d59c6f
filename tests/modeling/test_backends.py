"""The backend choice (Unsloth / transformers + PEFT), the mapping of our params to Unsloth's
arguments and the machine-dependent errors (modeling/backends.py). All on the CPU, without
importing unsloth."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, params
from spelltune.modeling.backends import (
    BackendError,
    Choice,
    choose_backend,
    decide,
    resolve_dtype,
    trainer_kwargs,
    unsloth_load_kwargs,
    unsloth_peft_kwargs,
)
from spelltune.params import parse


@pytest.mark.parametrize(
    ("backend", "cuda", "unsloth", "chosen", "why"),
    [
        ("auto", True, True, "unsloth", "CUDA GPU found and unsloth imports"),
        ("auto", True, False, "hf", "unsloth does not import"),
        ("auto", False, False, "hf", "no CUDA GPU"),
        ("auto", False, True, "hf", "no CUDA GPU"),
        ("unsloth", True, True, "unsloth", "model.backend = unsloth"),
        ("hf", True, True, "hf", "model.backend = hf"),
        ("hf", False, False, "hf", "model.backend = hf"),
    ],
)
def test_backend_choice(backend, cuda, unsloth, chosen, why):
    name, reason = choose_backend(params(backend=backend), cuda_available=cuda, unsloth_importable=unsloth)
    assert name == chosen and why in reason


@pytest.mark.parametrize(
    ("model", "cuda", "unsloth", "line"),
    [
        (
            {"backend": "unsloth"},
            False,
            False,
            "params.yaml: model.backend = 'unsloth': needs a CUDA GPU (none found) and the unsloth package",
        ),
        (
            {"backend": "unsloth"},
            True,
            False,
            "params.yaml: model.backend = 'unsloth': needs the unsloth package, which does not import here",
        ),
        (
            {"load_in_4bit": True},
            False,
            False,
            "params.yaml: model.load_in_4bit = True: needs a CUDA GPU (none found); use false on CPU",
        ),
        (
            {"load_in_4bit": True},
            True,
            False,
            "params.yaml: model.load_in_4bit = True: needs the unsloth backend; auto: CUDA GPU found but unsloth "
            "does not import",
        ),
    ],
)
def test_impossible_backend_is_one_line(model, cuda, unsloth, line):
    with pytest.raises(BackendError) as err:
        choose_backend(params(**model), cuda_available=cuda, unsloth_importable=unsloth)
    assert str(err.value).startswith(line) and "\n" not in str(err.value)


def test_ddp_runs_on_transformers_peft():
    ddp = params()
    ddp.train.processes = 2
    assert choose_backend(ddp, cuda_available=True, unsloth_importable=True) == (
        "hf", "auto: train.processes = 2 (DDP) runs on transformers + PEFT")
    ddp.model.backend = "unsloth"
    with pytest.raises(BackendError) as err:
        choose_backend(ddp, cuda_available=True, unsloth_importable=True)
    assert str(err.value) == ("params.yaml: model.backend = 'unsloth': trains on one GPU; "
                              "train.processes = 2 (DDP) needs hf or auto")


@pytest.mark.parametrize(
    ("dtype", "cuda", "bf16", "resolved"),
    [
        ("auto", False, False, "float32"),
        ("auto", True, True, "bfloat16"),
        ("auto", True, False, "float16"),
        ("float32", False, False, "float32"),
        ("float32", True, True, "float32"),
        ("float16", True, True, "float16"),
        ("bfloat16", True, True, "bfloat16"),
    ],
)
def test_dtype_by_device(dtype, cuda, bf16, resolved):
    assert resolve_dtype(params(dtype=dtype), cuda, bf16) == resolved


@pytest.mark.parametrize(
    ("dtype", "cuda", "bf16", "message"),
    [
        (
            "bfloat16",
            False,
            False,
            "model.dtype = 'bfloat16': needs a CUDA GPU (none found); use auto or float32 on CPU",
        ),
        ("float16", False, False, "model.dtype = 'float16': needs a CUDA GPU (none found); use auto or float32 on CPU"),
        ("bfloat16", True, False, "model.dtype = 'bfloat16': this GPU has no bfloat16 support; use auto or float16"),
    ],
)
def test_impossible_dtype_is_one_line(dtype, cuda, bf16, message):
    with pytest.raises(BackendError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_dtype(params(dtype=dtype), cuda, bf16)


def test_cpu_training_arguments_are_unchanged():
    # The CPU path must stay exactly what it was (use_cpu, fp32): resume is bit-identical.
    cpu = decide(params(), cuda_available=False, unsloth_importable=False, bf16_supported=False)
    assert cpu == Choice("hf", "auto: no CUDA GPU, transformers + PEFT on the CPU", "cpu", "float32")
    assert trainer_kwargs(cpu) == {"use_cpu": True}
    gpu = decide(params(backend="hf"), cuda_available=True, unsloth_importable=False, bf16_supported=True)
    assert trainer_kwargs(gpu) == {"use_cpu": False, "bf16": True, "fp16": False}
    old_gpu = decide(params(), cuda_available=True, unsloth_importable=True, bf16_supported=False)
    assert old_gpu.name == "unsloth" and trainer_kwargs(old_gpu) == {"use_cpu": False, "bf16": False, "fp16": True}


def test_unsloth_arguments():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"].update(backend="unsloth", load_in_4bit=True, gradient_checkpointing="unsloth")
    raw["lora"].update(r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj"])
    raw["train"]["seed"] = 7
    p = parse(raw)
    assert unsloth_load_kwargs(p, Path("data/base_model"), "bfloat16") == {
        "model_name": "data/base_model", "max_seq_length": 512, "dtype": "bfloat16", "load_in_4bit": True,
    }
    assert unsloth_peft_kwargs(p) == {
        "r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "bias": "none",
        "use_gradient_checkpointing": "unsloth", "random_state": 7, "use_rslora": False, "loftq_config": None,
    }
    assert unsloth_peft_kwargs(params(gradient_checkpointing=True))["use_gradient_checkpointing"] is True
    assert unsloth_peft_kwargs(params())["use_gradient_checkpointing"] is False
    assert "unsloth" not in sys.modules  # the mapping never imports it


def test_hf_gradient_checkpointing_trains(tiny_model):
    """model.gradient_checkpointing on the hf backend (also where auto fell back from
    'unsloth'): the LoRA weights still get gradients."""
    from spelltune.modeling.backends import load_hf

    p = params(gradient_checkpointing="unsloth")
    model, tokenizer = load_hf(p, tiny_model)
    assert model.get_base_model().is_activation_checkpointing
    model.train()
    ids = tokenizer("b-a-n-a-n-a", return_tensors="pt")["input_ids"]
    model(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]  # (lora_A's: 0 while B is 0)
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
