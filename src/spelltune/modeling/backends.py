"""The training backend: Unsloth on a CUDA GPU, transformers + PEFT everywhere else.

`model.backend: auto` picks Unsloth when a CUDA GPU is there and `unsloth` imports
(Unsloth refuses to import without a GPU), else transformers + PEFT ("hf"). Everything
after loading is shared: the same Trainer subclass, loss, checkpoints, resume, early
stopping, metric names, DVCLive and W&B.

What depends on the machine (CUDA present? bf16 supported? unsloth importable?) is
checked here at stage start, before any model loads, with one line naming the key, the
value and what is allowed; what does not (4-bit on the hf backend, ...) is the params
schema's job. `choose_backend`, `resolve_dtype` and the Unsloth argument mappings are
pure functions; only `load_unsloth` imports unsloth.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from spelltune.errors import fail

log = logging.getLogger("spelltune.modeling.backends")

SOURCE = "params.yaml"
UNSLOTH_HINT = "pip install unsloth"
# Well above the longest prompt + answer of the task; Unsloth sizes its RoPE cache from this.
MAX_SEQ_LENGTH = 512


class BackendError(ValueError):
    """A params/machine mismatch, phrased as the one line the user sees."""


def _bad(key: str, value, msg: str) -> BackendError:
    return BackendError(f"{SOURCE}: {key} = {value!r}: {msg}")


@dataclass(frozen=True)
class Choice:
    name: str  # "unsloth" | "hf"
    reason: str
    device: str  # "cuda" | "cpu"
    dtype: str  # "float32" | "bfloat16" | "float16"

    def as_dict(self) -> dict:
        return asdict(self)


def choose_backend(params, cuda_available: bool, unsloth_importable: bool) -> tuple[str, str]:
    """(backend name, why) for these params on this machine; BackendError if impossible."""
    m = params.model
    ddp = params.train.processes > 1
    if m.backend == "unsloth" and ddp:
        raise _bad(
            "model.backend",
            m.backend,
            f"trains on one GPU; train.processes = {params.train.processes} (DDP) needs hf or auto",
        )
    if m.backend == "unsloth":
        if not cuda_available:
            raise _bad(
                "model.backend",
                m.backend,
                f"needs a CUDA GPU (none found) and the unsloth package ({UNSLOTH_HINT}); allowed on CPU: auto or hf",
            )
        if not unsloth_importable:
            raise _bad(
                "model.backend",
                m.backend,
                f"needs the unsloth package, which does not import here ({UNSLOTH_HINT}); or use auto or hf",
            )
        name, reason = "unsloth", "model.backend = unsloth"
    elif m.backend == "hf":
        name, reason = "hf", "model.backend = hf"
    elif ddp:
        name, reason = "hf", f"auto: train.processes = {params.train.processes} (DDP) runs on transformers + PEFT"
    elif cuda_available and unsloth_importable:
        name, reason = "unsloth", "auto: CUDA GPU found and unsloth imports"
    elif cuda_available:
        name, reason = "hf", f"auto: CUDA GPU found but unsloth does not import ({UNSLOTH_HINT} for Unsloth)"
    else:
        name, reason = "hf", "auto: no CUDA GPU, transformers + PEFT on the CPU"
    if m.load_in_4bit:
        if not cuda_available:
            raise _bad("model.load_in_4bit", True, "needs a CUDA GPU (none found); use false on CPU")
        if name != "unsloth":
            raise _bad("model.load_in_4bit", True, f"needs the unsloth backend; {reason}; use false or install unsloth")
    return name, reason


def resolve_dtype(params, cuda_available: bool, bf16_supported: bool) -> str:
    """The compute dtype: auto = bf16 on a GPU that has it, else fp16 there; fp32 on the CPU
    (bf16 matmul is unusably slow on AVX2 CPUs)."""
    dtype = params.model.dtype
    if dtype == "auto":
        if not cuda_available:
            return "float32"
        return "bfloat16" if bf16_supported else "float16"
    if dtype != "float32" and not cuda_available:
        raise _bad("model.dtype", dtype, "needs a CUDA GPU (none found); use auto or float32 on CPU")
    if dtype == "bfloat16" and not bf16_supported:
        raise _bad("model.dtype", dtype, "this GPU has no bfloat16 support; use auto or float16")
    return dtype


def decide(params, cuda_available: bool, unsloth_importable: bool, bf16_supported: bool) -> Choice:
    name, reason = choose_backend(params, cuda_available, unsloth_importable)
    dtype = resolve_dtype(params, cuda_available, bf16_supported)
    return Choice(name, reason, "cuda" if cuda_available else "cpu", dtype)


def unsloth_installed() -> bool:
    return importlib.util.find_spec("unsloth") is not None


def unsloth_imports() -> bool:
    """Import unsloth for real (it must come before transformers to patch it)."""
    if not unsloth_installed():
        return False
    try:
        import unsloth  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - unsloth raises all kinds when it cannot run here
        log.info("unsloth does not import: %s", str(exc).splitlines()[0] if str(exc) else repr(exc))
        return False
    return True


def machine_needs_checking(params) -> bool:
    """False when these params run on any machine (no need to import torch to know)."""
    m = params.model
    return m.backend == "unsloth" or m.load_in_4bit or m.dtype not in ("auto", "float32")


def check_machine(params, import_unsloth: bool) -> Choice:
    """Decide on this machine. import_unsloth=False only asks whether it is installed
    (fast, for `validate`); the train stage imports it for real."""
    import torch

    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    wants_unsloth = params.model.backend != "hf" and cuda
    importable = wants_unsloth and (unsloth_imports() if import_unsloth else unsloth_installed())
    return decide(params, cuda, importable, bf16)


def unsloth_load_kwargs(params, model_dir: Path | str, dtype: str) -> dict:
    """Our params as FastLanguageModel.from_pretrained(...) arguments (dtype by name)."""
    return {
        "model_name": str(model_dir),
        "max_seq_length": MAX_SEQ_LENGTH,
        "dtype": dtype,
        "load_in_4bit": params.model.load_in_4bit,
    }


def unsloth_peft_kwargs(params) -> dict:
    """Our params as FastLanguageModel.get_peft_model(model, ...) arguments."""
    lora = params.lora
    return {
        "r": lora.r,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": list(lora.target_modules),
        "bias": "none",
        "use_gradient_checkpointing": params.model.gradient_checkpointing,
        "random_state": params.train.seed,
        "use_rslora": False,
        "loftq_config": None,
    }


def trainer_kwargs(choice: Choice) -> dict:
    """TrainingArguments that depend on the backend: the device and mixed precision.
    On the CPU exactly what the HF path always used (use_cpu, fp32)."""
    if choice.device == "cpu":
        return {"use_cpu": True}
    return {"use_cpu": False, "bf16": choice.dtype == "bfloat16", "fp16": choice.dtype == "float16"}


def load_unsloth(params, model_dir: Path | str, dtype: str):
    """Base model + LoRA through Unsloth; the only place that touches unsloth."""
    import torch
    from unsloth import FastLanguageModel

    kwargs = unsloth_load_kwargs(params, model_dir, dtype)
    kwargs["dtype"] = getattr(torch, kwargs["dtype"])
    model, tokenizer = FastLanguageModel.from_pretrained(**kwargs)
    model = FastLanguageModel.get_peft_model(model, **unsloth_peft_kwargs(params))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_hf(params, model_dir: Path | str):
    """Base model (fp32; mixed precision on a GPU comes from the Trainer) + PEFT LoRA."""
    from spelltune.modeling.base import load_base_model
    from spelltune.modeling.lora import build_lora_model

    model, tokenizer = load_base_model(Path(model_dir))
    if params.model.gradient_checkpointing:  # "unsloth" where auto fell back to hf: plain checkpointing
        model.activation_checkpointing_enable()  # non-reentrant; LoRA inputs get gradients
    return build_lora_model(model, params.lora), tokenizer


def load(params, choice: Choice, model_dir: Path | str):
    """(LoRA-wrapped model, tokenizer) on the chosen backend."""
    if choice.name == "unsloth":
        return load_unsloth(params, model_dir, choice.dtype)
    return load_hf(params, model_dir)


def check_or_exit(params, import_unsloth: bool = True) -> Choice:
    """For a stage entry point: decide and log it, or print the one line and exit 2."""
    try:
        choice = check_machine(params, import_unsloth)
    except BackendError as exc:
        fail(exc)
    log.info("backend: %s (%s); %s, %s", choice.name, choice.reason, choice.device, choice.dtype)
    return choice
