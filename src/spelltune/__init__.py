"""spelltune: LoRA fine-tuning experiments that teach a small language model to spell."""

__version__ = "0.1.0"
