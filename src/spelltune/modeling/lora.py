"""LoRA wrapping (transformers + PEFT) and saving the adapter byte-stably."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def build_lora_model(model, lora):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def save_adapter(model, out_dir: Path, base_model: str | None = None) -> None:
    """Save the LoRA adapter as safetensors, staged and renamed into place. PEFT keeps
    target_modules as a set, so its order in adapter_config.json follows Python's hash
    seed: sort it so that the same training gives byte-identical files (and DVC hash).
    base_model (spelltune.modeling.card.base_model_name) replaces the local data/base_model path
    PEFT records, so that the adapter loads elsewhere (spelltune.experiments.adapters maps it back here)."""
    staging = out_dir.with_name(f".staging-{out_dir.name}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    config_file = staging / "adapter_config.json"
    config = json.loads(config_file.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    if base_model:
        config["base_model_name_or_path"] = base_model
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(staging, out_dir)


def load_merged(adapter_dir: Path | None):
    """(model, tokenizer): the fp32 base model of data/base_model with the adapter in
    `adapter_dir` merged into it (None: the base model alone), on this worker's GPU when
    there is one. The adapter is device- and backend-independent safetensors: one trained
    with Unsloth on a GPU loads here onto the fp32 base model like one trained on the CPU."""
    import torch

    from spelltune.modeling.base import load_base_model

    model, tokenizer = load_base_model()
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    if torch.cuda.is_available():  # this worker's GPU (spelltune.training.devices), fp32 weights
        model = model.to("cuda")
    return model, tokenizer
