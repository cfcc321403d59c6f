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
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from spelltune.experiments.adapters import Source, UseError

FREE_BUDGET_WORD = "x" * 30  # other questions: generation.max_new_tokens gives them 32 tokens


# ------------------------------------------------------------------------- questions

# What `ask` and `chat` say they answer when a question is none of it.
EXAMPLES = ("What is the 3rd letter of 'banana'?", "Spell 'banana' letter by letter.")
# Questions that name letters but ask for something else: how many there are, how long the
# word is. read_question takes "letters" for a spelling question.
_COUNTING = re.compile(r"\b(how\s+many|how\s+long|count(ing|s)?|number\s+of|length)\b", re.IGNORECASE)


def item_for_question(question: str, separator: str = "-", where: str = "ask") -> dict:
    """The evaluation item a question is (task, word, expected answer), read from the user's
    own words (task.wordings.read_question) and asked as typed; or a free question (task
    "other": not a letter or spelling question; `ask` and `chat` refuse it with
    out_of_scope, `predict` answers it with a 32-token budget, unscored). A word longer
    than predict's words may be (MAX_WORD_LETTERS) is a UseError naming `where`."""
    from spelltune.task.questions import letter_question, spelling_question
    from spelltune.task.wordings import read_question

    q = question.strip()
    found = read_question(q)
    if found is not None and _COUNTING.search(re.sub(re.escape(found[1]), " ", q, flags=re.IGNORECASE)):
        found = None  # "How many letters are in 'apple'?" (but "Spell 'count'." is a spelling question)
    if found is None:
        return {"question": q, "task": "other", "word": FREE_BUDGET_WORD, "answer": "", "position": None}
    task, word, position = found
    word = _check_word(word, where)
    item = letter_question(word, position) if task == "letter_position" else spelling_question(word, separator)
    return {**item, "question": q}


def out_of_scope(question: str) -> str:
    """The one line `ask` and `chat` give for a question that is not about a word's letters."""
    shown = question.strip()
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return (f"{shown!r} is not a spelling or letter question it can answer; ask e.g. "
            f'"{EXAMPLES[0]}" or "{EXAMPLES[1]}"')


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


MAX_LINE_CHARS = 1_000_000  # an input line longer than this is not a word or a question
# predict answers and writes this many batches of questions at a time (1,024 questions at
# eval.batch_size 64): memory bounded whatever the input's size. A reply is the same in any
# batch (tests/modeling/test_generation.py), so chunks change none.
CHUNK_BATCHES = 16


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(number, line) of a text file, one at a time: memory bounded by MAX_LINE_CHARS."""
    no = 0
    with open(path, encoding="utf-8") as f:
        while True:
            try:
                line = f.readline(MAX_LINE_CHARS + 1)
            except UnicodeDecodeError:
                raise UseError(f"{path}: not a text file (UTF-8 words or JSON lines)") from None
            if not line:
                return
            no += 1
            if len(line.rstrip("\n")) > MAX_LINE_CHARS:
                raise UseError(f"{path} line {no}: longer than {MAX_LINE_CHARS:,} characters "
                               "(one word, or one JSON object, per line)")
            yield no, line


def _input_lines(path: str | Path, separator: str) -> Iterator[tuple[int, str | None, dict | None]]:
    """(line number, word, None) for a word (both kinds of question), (line number, None, item)
    for a question; blank and comment lines skipped, a bad line one UseError naming its number."""
    path = Path(path)
    if not path.is_file():
        raise UseError(f"{path}: no such file")
    with closing(_lines(path)) as lines:
        first = next((line.strip() for _, line in lines if line.strip()), "")
    jsonl = path.suffix == ".jsonl" or first.startswith("{")
    for no, line in _lines(path):
        text = line.strip()
        if not text or (not jsonl and text.startswith("#")):
            continue
        where = f"{path} line {no}"
        if not jsonl:
            yield no, _check_word(text, where), None
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
            item = item_for_question(obj["question"], separator, where)
            if obj.get("task") in ("letter_position", "spelling") and isinstance(obj.get("word"), str):
                item = {**item, **{k: obj[k] for k in ("task", "word", "answer", "position") if k in obj}}
            yield no, None, {**item, "line": no}
        elif "word" in obj:
            yield no, _check_word(obj["word"], where), None
        else:
            raise UseError(
                f'{where}: needs a "question" or a "word" key, got {", ".join(map(repr, obj)) or "an empty object"}'
            )


def check_inputs(path: str | Path, separator: str = "-") -> int:
    """Every line of an input file checked, one at a time, before any model loads: the
    number of questions it asks (a bad line is one UseError naming its number; an empty file too)."""
    count = sum(len(word) + 1 if word is not None else 1 for _, word, _ in _input_lines(path, separator))
    if not count:
        raise UseError(
            f'{path}: empty, nothing to predict (one word per line, or JSON lines with "question" or "word")'
        )
    return count


def iter_inputs(path: str | Path, separator: str = "-") -> Iterator[dict]:
    """The questions of a words file (one word per line: both kinds of question each) or a
    JSON Lines file (objects with "question", or with "word"; data/*.jsonl items work as they
    are), one at a time, each with its line number."""
    for no, word, item in _input_lines(path, separator):
        if word is None:
            yield item
        else:
            yield from ({**it, "line": no} for it in items_for_word(word, separator))


def read_inputs(path: str | Path, separator: str = "-") -> list[dict]:
    """iter_inputs' questions as a list (a small file: predict itself streams them)."""
    check_inputs(path, separator)
    return list(iter_inputs(path, separator))


def chunks(items: Iterable[dict], size: int) -> Iterator[list[dict]]:
    chunk: list[dict] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def trained_words(source: Source) -> set[str] | None:
    """The words of the adapter's training items (data/train.jsonl of its workspace or
    experiment commit); None where that file is not at hand (an --adapter directory, an
    experiment whose data is not in the local DVC cache)."""
    if source.read is None:
        return None
    try:
        text = source.read("data/train.jsonl")
    except Exception:  # noqa: BLE001 - DVC raises many kinds for an output not in its cache
        return None
    if text is None:
        return None
    words = set()
    for line in text.splitlines():
        if line.strip():
            try:
                word = json.loads(line).get("word")
            except (json.JSONDecodeError, AttributeError):
                return None  # not the training items the pipeline writes: no claim either way
            if isinstance(word, str):
                words.add(word.lower())
    return words


def mark_trained(row: dict, words: set[str] | None) -> dict:
    """`trained`: whether the row's word was among the adapter's training words; "unknown"
    where those are not known. Rows of free questions (no word) carry none."""
    if "word" in row:
        row["trained"] = "unknown" if words is None else row["word"].lower() in words
    return row


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


class Tally:
    """The running summary of predict's answers, without keeping them."""

    def __init__(self) -> None:
        self.n = 0
        self.right = {"letter_position": 0, "spelling": 0}
        self.asked = {"letter_position": 0, "spelling": 0}
        self.trained = {True: 0, False: 0, "unknown": 0}

    def add(self, row: dict) -> None:
        self.n += 1
        if row["task"] in self.asked:
            self.asked[row["task"]] += 1
            self.right[row["task"]] += bool(row.get("correct"))
        if "trained" in row:
            self.trained[row["trained"]] += 1

    def summary(self) -> str:
        parts = [f"{self.n} answers"]
        for task, name in (("letter_position", "letter-position accuracy"), ("spelling", "spelling exact match")):
            if self.asked[task]:
                parts.append(f"{name} {self.right[task] / self.asked[task]:.3f}")
        with_word = sum(self.trained.values())
        if with_word and not self.trained["unknown"]:
            parts.append(f"{self.trained[True]} of {with_word} about words it trained on (trained: true)")
        return ", ".join(parts)


def progress_summary(rows: Iterable[dict]) -> str:
    tally = Tally()
    for row in rows:
        tally.add(row)
    return tally.summary()


def check_output(out: str, input_path: str) -> None:
    """Before any work: predict never writes its answers over its own input file (by the same
    name, a symbolic link or a hard link), nor into a directory that is a file."""
    import os

    if out == "-":
        return
    same = Path(out).resolve() == Path(input_path).resolve()
    if not same and Path(out).exists() and Path(input_path).exists():
        same = os.path.samefile(out, input_path)  # a hard link: the same inode on the same device
    if same:
        raise UseError(f"predict -o {out}: that is the input file {input_path} (the same file, by this name or "
                       "a link); give another output path")
    file_above = next((p for p in Path(out).parents if p.exists() and not p.is_dir()), None)
    if file_above is not None:
        raise UseError(f"predict -o {out}: {file_above} is a file, not a directory")
    if Path(out).is_dir():
        raise UseError(f"predict -o {out}: that is a directory; give the path of a file to write")


@contextmanager
def output_stream(out: str):
    """The file predict writes its answers to as they come (or stdout, for "-")."""
    if out == "-":
        yield sys.stdout
        return
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        yield f


def write_rows(rows: list[dict], out: str) -> None:
    with output_stream(out) as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
