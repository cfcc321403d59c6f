"""A trained adapter shared: its full model card, the adapter as PEFT files, the LoRA merged
into the base weights (plain transformers loads it), and one f32 GGUF file for llama.cpp.

    spelltune card [-o README.md]
    spelltune export --merged DIR | --peft DIR | --gguf FILE
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from spelltune.experiments.adapters import Source, UseError, params_at
from spelltune.experiments.use import merged_model
from spelltune.modeling import card, card_markdown

COMPACT_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

def full_card(source: Source, merged: bool = False) -> str:
    """The model card with evaluate's metrics (when the source has them)."""
    facts = source.facts
    if facts is None:  # an adapter trained before cards were written: what its commit's params say
        from spelltune.params import parse

        params = parse(params_at(source.read("params.yaml")) if source.read else {})
        facts = card.training_facts(params, None, data_dir=Path("/nonexistent"))
    details, details_source, base_details = None, "", None
    if source.read is not None:
        details, details_source = card.evaluation(source.read, "eval")
        base_details, _ = card.evaluation(source.read, "base")
    return card_markdown.render(facts, merged=merged, details=details, details_source=details_source,
                                base_details=base_details, extra_params=source.extra_params, revision=source.revision)


# Weight files in torch's pickle format: loading one can run code (torch.load), so an export,
# meant to be shared and loaded elsewhere, never carries one.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def check_safetensors_only(source: Source) -> None:
    """An adapter to share holds its weights as safetensors, and no pickled weights beside them."""
    pickled = sorted(f.name for f in source.adapter_dir.iterdir() if f.is_file() and f.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise UseError(f"export --peft: adapter {source.adapter_dir} holds {pickled[0]}, pickled weights (loading them "
                       "can run code); only safetensors adapters (adapter_model.safetensors) are exported")
    if not (source.adapter_dir / "adapter_model.safetensors").is_file():
        raise UseError(f"export --peft: adapter {source.adapter_dir} has no adapter_model.safetensors; "
                       "only safetensors adapters are exported")


def export_peft(source: Source, out_dir: Path) -> None:
    """The adapter's files and the full model card: a directory to share (e.g. on the HF Hub)."""
    check_safetensors_only(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in source.adapter_dir.iterdir():
        if f.is_file() and f.name != card.CARD_FILE:
            shutil.copy2(f, out_dir / f.name)
    (out_dir / card.CARD_FILE).write_text(full_card(source))


def export_merged(source: Source, out_dir: Path) -> None:
    """The LoRA merged into the fp32 base weights: safetensors, tokenizer, a chat template that
    renders the trained prompt, a generation config that stops at end-of-turn. Plain
    transformers loads it (no PEFT)."""
    from spelltune.modeling.base import load_base_model

    model, tokenizer = load_base_model(source.base_dir)
    model = merged_model(model, source)
    if source.prompt_format == "compact":
        tokenizer.chat_template = COMPACT_CHAT_TEMPLATE
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.do_sample = False
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / card.CARD_FILE).write_text(full_card(source, merged=True))
    _readable_by_all(out_dir)


def _readable_by_all(out_dir: Path) -> None:
    """The modes a plain file write gives (0644 under the usual umask): transformers writes
    the weights through a private temporary file (0600), which others could not read."""
    umask = os.umask(0)
    os.umask(umask)
    for f in out_dir.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~umask)


def check_export_targets(peft: str | None, merged: str | None, gguf: str | None) -> None:
    """Refuse, before any work, to write into a directory that holds files or over a file:
    an export never overwrites what a user has there."""
    for flag, target in (("--peft", peft), ("--merged", merged)):
        if target and Path(target).exists() and (not Path(target).is_dir() or any(Path(target).iterdir())):
            held = sorted(p.name for p in Path(target).iterdir())[:3] if Path(target).is_dir() else []
            raise UseError(f"export {flag} {target}: not an empty directory"
                           f"{' (holds ' + ', '.join(held) + ')' if held else ''}; give a new or empty one")
    if gguf and Path(gguf).exists():
        raise UseError(f"export --gguf {gguf}: the file exists; remove it or give another path")


def export_gguf(source: Source, out: Path, merged_dir: Path | None = None) -> None:
    """The merged model as one f32 GGUF file for llama.cpp: written here with the `gguf`
    package's writer (llama.cpp's convert_hf_to_gguf.py is not on PyPI; a package that
    bundles it, llama-cpp-python, compiles llama.cpp at install time)."""
    with tempfile.TemporaryDirectory(prefix="spelltune-merged-") as tmp:
        if merged_dir is None or not (merged_dir / "config.json").is_file():
            merged_dir = Path(tmp)
            export_merged(source, merged_dir)
        facts = source.facts or {}
        write_gguf(merged_dir, out, name=f"{Path(str(facts.get('base_model', 'model'))).name}-spelling")


def _permute(w, n_head: int):
    """HF's rotary layout (halves) -> GGUF's (interleaved pairs) for q/k rows, as llama.cpp's converter does."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model_dir: Path, out: Path, name: str) -> None:
    """A Llama-architecture HF model with a byte-level BPE tokenizer (SmolLM2's) -> f32 GGUF."""
    import gguf

    config = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    _check_gguf_convertible(config, tok)
    writer = gguf.GGUFWriter(str(out), "llama")
    _gguf_hparams(writer, config, name)
    _gguf_vocab(writer, tok, model_dir, config["vocab_size"])
    _gguf_tensors(writer, model_dir, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _check_gguf_convertible(config: dict, tok: dict) -> None:
    if config.get("model_type") != "llama":
        raise UseError(
            "--gguf: only Llama-architecture models are written (SmolLM2 is one); this one is "
            f"{config.get('model_type')!r}"
        )
    rope = config.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default" or config.get("rope_scaling"):
        raise UseError(
            "--gguf: models with scaled RoPE are not written; use llama.cpp's convert_hf_to_gguf.py on the --merged "
            "directory"
        )
    if tok["model"]["type"] != "BPE" or (tok.get("decoder") or {}).get("type") != "ByteLevel":
        raise UseError("--gguf: only byte-level BPE tokenizers (GPT-2 style, SmolLM2's) are written")


def _gguf_hparams(writer, config: dict, name: str) -> None:
    import gguf

    rope = config.get("rope_parameters") or {}
    n_head, hidden = config["num_attention_heads"], config["hidden_size"]
    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(config.get("num_key_value_heads") or n_head)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0))
    writer.add_rope_dimension_count(config.get("head_dim") or hidden // n_head)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)


def _gguf_vocab(writer, tok: dict, model_dir: Path, n_vocab: int) -> None:
    import gguf

    added = {a["id"]: a for a in tok.get("added_tokens", [])}
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [gguf.TokenType.UNUSED] * n_vocab
    for text, i in tok["model"]["vocab"].items():
        if i < n_vocab:
            tokens[i], types[i] = text, gguf.TokenType.NORMAL
    for i, a in added.items():
        if i < n_vocab:
            tokens[i] = a["content"]
            types[i] = gguf.TokenType.CONTROL if a.get("special") else gguf.TokenType.USER_DEFINED
    writer.add_tokenizer_model("gpt2")
    # llama.cpp picks its pre-tokenizer by this name; SmolLM2's is "smollm".
    smollm = n_vocab == 49152 and tokens[1] == "<|im_start|>"
    writer.add_tokenizer_pre("smollm" if smollm else "default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=n_vocab)
    special.add_to_gguf(writer, quiet=True)
    if "bos" not in special.add_special_token:
        writer.add_add_bos_token(False)  # as the HF tokenizer: our prompts start without BOS
    writer.add_add_space_prefix(False)


def _gguf_tensors(writer, model_dir: Path, config: dict) -> None:
    import gguf
    import numpy as np
    from safetensors import safe_open

    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_head
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(file, framework="np") as f:
            for key in f.keys():  # a safetensors file, not a dict
                if key == "lm_head.weight" and config.get("tie_word_embeddings"):
                    continue  # GGUF reuses token_embd for a tied output layer
                new = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if new is None:
                    raise UseError(f"--gguf: no GGUF name for tensor {key}")
                data = f.get_tensor(key).astype(np.float32)
                if key.endswith("q_proj.weight"):
                    data = _permute(data, n_head)
                elif key.endswith("k_proj.weight"):
                    data = _permute(data, n_kv)
                writer.add_tensor(new, data)
