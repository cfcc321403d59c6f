"""Loading and saving the base model, LoRA wrapping, and the prompt format.

The base model is materialised once by the prepare stage as safetensors under
data/base_model/: loading the embedded GGUF de-quantizes it, which is slow, and the
safetensors copy loads fast (docs/results.md). Later stages only ever load that directory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from spelltune.modeling.sources import EMBEDDED, embedded_gguf
from spelltune.paths import BASE_MODEL_DIR

log = logging.getLogger(__name__)

def _load_source(source: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source == EMBEDDED:
        gguf = embedded_gguf()
        kwargs = {"gguf_file": gguf.name}
        location = str(gguf.parent)
    else:
        kwargs, location = {}, source
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32, **kwargs)
    return model, tokenizer


def materialize_base_model(source: str, out_dir: Path = BASE_MODEL_DIR) -> None:
    """Write `source` as a plain fp32 safetensors model + tokenizer to out_dir."""
    from transformers import AutoModelForCausalLM

    model, tokenizer = _load_source(source)
    # A model loaded from GGUF refuses save_pretrained: rebuild a clean one from its
    # config (minus the quantization record) and copy the de-quantized weights over.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(model.state_dict())
    clean.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    clean.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def model_tag(source: str) -> str:
    """A short model name for trackers: the embedded model's name, else the id's last part."""
    return "SmolLM2-135M-Instruct" if source == EMBEDDED else Path(source.rstrip("/")).name


def set_threads(threads: int) -> int:
    """Use `threads` intra-op threads (0: one per core this process may run on)."""
    n = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def load_base_model(model_dir: Path = BASE_MODEL_DIR):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"{model_dir}: no base model here; run the prepare stages first (dvc exp run)")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def make_tiny_model(out_dir: Path, tokenizer_source: str = EMBEDDED, seed: int = 0) -> Path:
    """A randomly initialised Llama model of SmolLM2's shape but tiny, with the real
    tokenizer: the whole pipeline runs on it in seconds (tests, smoke runs)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if tokenizer_source == EMBEDDED:
        gguf = embedded_gguf()
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    else:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
