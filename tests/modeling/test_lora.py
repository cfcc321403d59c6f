"""LoRA wrapping and adapter saving (modeling/lora.py): byte-stable configs, and a GPU-style
(bf16) adapter that loads on the CPU."""

from __future__ import annotations

from spelltune.modeling.base import load_base_model
from spelltune.modeling.lora import build_lora_model
from spelltune.params import LoraParams


def test_saved_adapter_config_is_byte_stable(tiny_model, tmp_path):
    """PEFT keeps target_modules as a set; its JSON order must not depend on the hash seed."""
    import json

    from spelltune.modeling.lora import save_adapter

    model = build_lora_model(load_base_model(tiny_model)[0], LoraParams(r=4))
    save_adapter(model, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted(LoraParams().target_modules)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()


def test_gpu_style_adapter_loads_on_the_cpu(tiny_model, tmp_path):
    """A GPU run saves its LoRA weights in bf16/fp16 (Unsloth, or HF mixed precision): the
    safetensors file carries no device, and PEFT loads it onto the fp32 CPU base model."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from spelltune.modeling.base import load_base_model
    from spelltune.modeling.lora import build_lora_model, save_adapter
    from spelltune.params import LoraParams

    torch.manual_seed(0)
    trained = build_lora_model(load_base_model(tiny_model)[0], LoraParams(r=4))
    for name, p in trained.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)  # B starts at zero: make the adapter do something
    trained = trained.to(torch.bfloat16)
    save_adapter(trained, tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter/adapter_model.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.bfloat16} and {t.device.type for t in saved.values()} == {"cpu"}

    base, tokenizer = load_base_model(tiny_model)
    loaded = PeftModel.from_pretrained(base, tmp_path / "adapter")
    lora = {n: p for n, p in loaded.named_parameters() if "lora_" in n}
    assert lora and all(p.dtype == torch.float32 and p.device.type == "cpu" for p in lora.values())
    ids = tokenizer("banana", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        merged = loaded.merge_and_unload()(ids).logits
        plain = load_base_model(tiny_model)[0](ids).logits
    assert torch.isfinite(merged).all() and not torch.equal(merged, plain)
