"""The model: base model materialisation and loading, LoRA wrapping and adapter saving,
backends (transformers + PEFT, Unsloth), packed attention, batched generation, the model card."""
