"""Using a trained adapter: ask it and batch-predict, with evaluation's own prompts,
generation and parsing (spelltune.modeling.generation, spelltune.task.scoring).

    spelltune ask "What is the 3rd letter of 'banana'?" [--base] [--exp NAME | --adapter DIR]
    spelltune chat
    spelltune predict words.txt|questions.jsonl -o out.jsonl

Which adapter, on which base model: spelltune.experiments.adapters; its card and exports:
spelltune.experiments.export.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from spelltune.experiments.adapters import Source, UseError

FREE_BUDGET_WORD = "x" * 30  # other questions: generation.max_new_tokens gives them 32 tokens




# ------------------------------------------------------------------------- questions


def item_for_question(question: str, separator: str = "-") -> dict:
    """The evaluation item a question is (task, word, expected answer), read from the user's
    own words (task.wordings.read_question) and asked as typed; or a free question (task
    "other": answered with a 32-token budget, not scored)."""
    from spelltune.task.questions import letter_question, spelling_question
    from spelltune.task.wordings import read_question

    q = question.strip()
    found = read_question(q)
    if found is None:
        return {"question": q, "task": "other", "word": FREE_BUDGET_WORD, "answer": "", "position": None}
    task, word, position = found
    item = letter_question(word, position) if task == "letter_position" else spelling_question(word, separator)
    return {**item, "question": q}


def items_for_word(word: str, separator: str = "-") -> list[dict]:
    """Both question kinds: every letter position (the last one asked as 'last'), then the spelling."""
    from spelltune.task.questions import letter_question, spelling_question

    return [letter_question(word, p) for p in range(1, len(word) + 1)] + [spelling_question(word, separator)]


MAX_WORD_LETTERS = 40  # the longest English words; each letter costs a question and tokens to answer


def _check_word(word, where: str) -> str:
    if not isinstance(word, str) or not word.isascii() or not word.isalpha():
        raise UseError(f"{where}: {word!r} is not a word (letters a-z only, one word per line)")
    if len(word) > MAX_WORD_LETTERS:
        raise UseError(f"{where}: {word[:20]!r}... has {len(word)} letters; at most {MAX_WORD_LETTERS}")
    return word.lower()


def read_inputs(path: str | Path, separator: str = "-") -> list[dict]:
    """Questions from a words file (one word per line: both kinds of question each) or a JSON
    Lines file (objects with "question", or with "word"; data/*.jsonl items work as they are).
    Blank lines are skipped; a bad line is one error naming its number."""
    path = Path(path)
    if not path.is_file():
        raise UseError(f"{path}: no such file")
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise UseError(f"{path}: not a text file (UTF-8 words or JSON lines)") from None
    first = next((line.strip() for line in lines if line.strip()), "")
    jsonl = path.suffix == ".jsonl" or first.startswith("{")
    items: list[dict] = []
    for no, line in enumerate(lines, 1):
        text = line.strip()
        if not text or (not jsonl and text.startswith("#")):
            continue
        where = f"{path} line {no}"
        if not jsonl:
            items += [{**it, "line": no} for it in items_for_word(_check_word(text, where), separator)]
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UseError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise UseError(f'{where}: expected a JSON object with "question" or "word", got {type(obj).__name__}')
        if "question" in obj:
            if not isinstance(obj["question"], str) or not obj["question"].strip():
                raise UseError(f'{where}: "question" must be a non-empty string')
            item = item_for_question(obj["question"], separator)
            if obj.get("task") in ("letter_position", "spelling") and isinstance(obj.get("word"), str):
                item = {**item, **{k: obj[k] for k in ("task", "word", "answer", "position") if k in obj}}
            items.append({**item, "line": no})
        elif "word" in obj:
            items += [{**it, "line": no} for it in items_for_word(_check_word(obj["word"], where), separator)]
        else:
            raise UseError(
                f'{where}: needs a "question" or a "word" key, got {", ".join(map(repr, obj)) or "an empty object"}'
            )
    if not items:
        raise UseError(
            f'{path}: empty, nothing to predict (one word per line, or JSON lines with "question" or "word")'
        )
    return items


def scored(item: dict, reply: str) -> dict:
    """One output row: the question, the reply, and evaluation's parse and score where the task is known."""
    from spelltune.task.scoring import parse_letter, parse_spelling, score_item

    row = {k: v for k, v in item.items() if v is not None}
    row["reply"] = reply
    if item["task"] == "other":
        row.pop("word", None)
        row.pop("answer", None)
        return row
    row["parsed"] = parse_letter(reply) if item["task"] == "letter_position" else "".join(parse_spelling(reply))
    row.update({k: v for k, v in score_item(item, reply).items() if v is not None})
    return row


# ------------------------------------------------------------------------- models


def load_tuned(source: Source, with_base: bool, items: list[dict], batch_size: int):
    """(fine-tuned replies, base replies or None), the way evaluation makes them: the adapter
    merged into the fp32 base model, greedy, batched; the base model with its chatty budget."""
    from spelltune.modeling.generation import generate_replies

    model, tokenizer = _base_model(source)
    base_replies = None
    if with_base:
        base_replies = generate_replies(model, tokenizer, items, source.prompt_format, batch_size, chatty=True)
    return tuned_replies(merged_model(model, source), tokenizer, source, items, batch_size), base_replies


def tuned_model(source: Source):
    """(the adapter merged into the fp32 base model, tokenizer): loaded once, for `chat`."""
    model, tokenizer = _base_model(source)
    return merged_model(model, source), tokenizer


def tuned_replies(model, tokenizer, source: Source, items: list[dict], batch_size: int) -> list[str]:
    from spelltune.modeling.generation import generate_replies

    return generate_replies(model, tokenizer, items, source.prompt_format, batch_size,
                            letter_answer=source.letter_answer)


def _base_model(source: Source):
    import torch

    from spelltune.modeling.base import load_base_model

    model, tokenizer = load_base_model(source.base_dir)
    return (model.to("cuda") if torch.cuda.is_available() else model), tokenizer


# What _merge_plain_lora handles; any other adapter goes through PEFT.
_PLAIN_LORA = {"peft_type": "LORA", "use_dora": False, "use_rslora": False, "fan_in_fan_out": False, "bias": "none",
               "lora_bias": False}


def _merge_plain_lora(model, adapter_dir: Path) -> bool:
    """W += (B @ A) * alpha / r for every adapted linear layer: PEFT's merge, the same
    operations in the same order (so the same weights, bit for bit), without importing PEFT
    and wrapping the model (a large part of `ask`'s start, docs/model.md). False: not a plain LoRA
    adapter of this model, nothing changed."""
    import torch
    from safetensors.torch import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    weights_file = adapter_dir / "adapter_model.safetensors"
    if (any(config.get(k, v) != v for k, v in _PLAIN_LORA.items()) or not weights_file.is_file()
            or any(config.get(k) for k in ("rank_pattern", "alpha_pattern", "modules_to_save", "layer_replication"))):
        return False
    weights = load_file(weights_file)
    modules = dict(model.named_modules())
    pairs = []
    for key in weights:
        if key.endswith(".lora_B.weight"):
            continue
        if not key.endswith(".lora_A.weight"):
            return False
        prefix = key.removesuffix(".lora_A.weight")
        layer = modules.get(prefix.removeprefix("base_model.model."))
        a, b = weights[key], weights.get(prefix + ".lora_B.weight")
        if (not isinstance(layer, torch.nn.Linear) or b is None or a.dtype != layer.weight.dtype
                or (b.shape[0], a.shape[1]) != tuple(layer.weight.shape)):
            return False  # PEFT loads it, or says what does not fit
        pairs.append((layer, a.to(layer.weight.device), b.to(layer.weight.device)))
    if not pairs:
        return False
    scaling = config["lora_alpha"] / config["r"]
    # One thread: many tiny products gain nothing from more, and on busy cores every op's
    # OpenMP barrier waits for a descheduled thread (docs/model.md).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for layer, a, b in pairs:
                layer.weight.data += (b @ a) * scaling
    finally:
        torch.set_num_threads(threads)
    return True


def merged_model(model, source: Source):
    if _merge_plain_lora(model, source.adapter_dir):
        return model
    import pickle

    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, source.adapter_dir).merge_and_unload()
    except pickle.UnpicklingError:
        raise UseError(f"adapter {source.adapter_dir}: its adapter_model.bin pickles more than tensors; refused "
                       "unread (torch.load weights_only), as it could run code: give its safetensors") from None
    except (RuntimeError, ValueError, KeyError) as exc:
        # e.g. a size mismatch: an adapter of another model under the same name
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        first = next((line for line in lines if "size mismatch" in line), lines[0] if lines else type(exc).__name__)[
            :300
        ]
        raise UseError(
            f"adapter {source.adapter_dir} does not fit the base model in {source.base_dir}: {first}"
        ) from None


# ------------------------------------------------------------------------- output


def progress_summary(rows: list[dict]) -> str:
    from spelltune.task.scoring import summarize

    known = [r for r in rows if r["task"] != "other"]
    if not known:
        return f"{len(rows)} answers"
    s = summarize(known)
    parts = [f"{len(rows)} answers"]
    if s["letter_position_accuracy"] is not None:
        parts.append(f"letter-position accuracy {s['letter_position_accuracy']:.3f}")
    if s["spelling_exact_match"] is not None:
        parts.append(f"spelling exact match {s['spelling_exact_match']:.3f}")
    return ", ".join(parts)


def check_output(out: str, input_path: str) -> None:
    """Before any work: predict never writes its answers over its own input file, nor
    into a directory that is a file."""
    if out == "-":
        return
    if Path(out).resolve() == Path(input_path).resolve():
        raise UseError(f"predict -o {out}: that is the input file; give another output path")
    file_above = next((p for p in Path(out).parents if p.exists() and not p.is_dir()), None)
    if file_above is not None:
        raise UseError(f"predict -o {out}: {file_above} is a file, not a directory")


def write_rows(rows: list[dict], out: str) -> None:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if out == "-":
        sys.stdout.write(text)
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
