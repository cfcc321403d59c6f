"""Using a trained adapter: ask it, batch-predict, write its model card, export it.

    spelltune ask "What is the 3rd letter of 'banana'?" [--base] [--exp NAME | --adapter DIR]
    spelltune predict words.txt|questions.jsonl -o out.jsonl
    spelltune card [-o README.md]
    spelltune export --merged DIR | --peft DIR | --gguf FILE

The adapter is the workspace's (checkpoints/adapter), an experiment's (read from the DVC
cache at that experiment's commit, the workspace untouched) or any adapter directory. It
always runs on the local base model (data/base_model, or the experiment's own from the
cache when it used another model.source); adapter_config.json names the real base model
(spelltune.modeling.card.base_model_name), and an adapter trained on another one is refused.
Prompts, generation and parsing are evaluation's own (spelltune.modeling.generation, spelltune.task.scoring).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from spelltune.modeling import card
from spelltune.params import schema_default
from spelltune.paths import ADAPTER_DIR, BASE_MODEL_DIR

# A chat template that renders exactly spelltune.task.prompts.COMPACT_PROMPT for one user turn (ChatML, no
# system prompt): a merged export of a compact-trained model gets the prompt it learned.
COMPACT_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
FREE_BUDGET_WORD = "x" * 30  # other questions: generation.max_new_tokens gives them 32 tokens


class UseError(Exception):
    """A problem with the command's input, phrased as the one line the user sees."""


@dataclass
class Source:
    """Where an adapter and its base model are, and how it was trained to be prompted."""

    label: str
    adapter_dir: Path
    base_dir: Path
    prompt_format: str
    separator: str
    facts: dict | None
    read: Callable[[str], str | None] | None = None  # a file of the adapter's commit (workspace or experiment)
    revision: str | None = None
    extra_params: dict = field(default_factory=dict)  # data/eval params of that commit, for the card
    batch_size: int = 64  # eval.batch_size of that commit
    _tmp: tempfile.TemporaryDirectory | None = None
    letter_answer: str = "direct"  # data.letter_answer it was trained with

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def _git(repo: Path, *args: str) -> str | None:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def resolve_rev(repo: Path, name: str) -> str:
    """An experiment's commit, by its name (`dvc exp show`'s), or any git revision."""
    listed = _git(repo, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps") or ""
    # An experiment's ref is refs/exps/<2 hex>/<38 hex>/<name>; refs/exps/exec/* are DVC's own.
    refs = [(sha, ref.split("/")[-1]) for sha, ref in (line.split(" ", 1) for line in listed.splitlines())
            if len(ref.split("/")) == 5 and ref.split("/")[2] != "exec"]
    hits = sorted({sha for sha, exp_name in refs if exp_name == name})
    if len(hits) > 1:
        raise UseError(
            f"--exp {name}: {len(hits)} experiments have this name; give its commit instead "
            f"({', '.join(h[:7] for h in hits)})"
        )
    if hits:
        return hits[0]
    sha = _git(repo, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
    if sha:
        return sha
    known = sorted({exp_name for _, exp_name in refs})
    raise UseError(
        f"--exp {name}: no such experiment or git revision in {repo}; experiments: {', '.join(known) or '(none)'}"
    )


def _params_at(text: str | None) -> dict:
    return (yaml.safe_load(text) or {}) if text else {}


def _lock_param(lock: dict, stage: str, key: str):
    return (((lock.get("stages") or {}).get(stage) or {}).get("params") or {}).get("params.yaml", {}).get(key)


def _source_of(read: Callable[[str], str | None]) -> tuple[str, dict]:
    """The model.source that made a commit's (or the workspace's) data/base_model: dvc.lock's
    record of the prepare_model run, else params.yaml; and params.yaml itself."""
    params = _params_at(read("params.yaml"))
    lock = _params_at(read("dvc.lock"))
    source = (
        _lock_param(lock, "prepare_model", "model.source") or (params.get("model") or {}).get("source") or card.EMBEDDED
    )
    return source, params


def _workspace_reader(repo: Path) -> Callable[[str], str | None]:
    def read(path: str) -> str | None:
        file = repo / path
        return file.read_text() if file.is_file() else None

    return read


def _adapter_facts(adapter_dir: Path) -> dict | None:
    readme = adapter_dir / card.CARD_FILE
    return card.facts_of_card(readme.read_text()) if readme.exists() else None


def _from_experiment(repo: Path, exp: str, local_source: str):
    """An experiment's adapter (and, when it used another model, its base model) from the DVC
    cache into a temporary directory: (rev, adapter_dir, base_dir, base_source, read, params, tmp)."""
    from dvc.api import DVCFileSystem

    rev = resolve_rev(repo, exp)
    fs = DVCFileSystem(str(repo), rev=rev)

    def read(path: str) -> str | None:
        try:
            return fs.read_text(path)
        except (FileNotFoundError, IsADirectoryError):
            return None

    tmp = tempfile.TemporaryDirectory(prefix="spelltune-exp-")
    adapter_dir = Path(tmp.name) / "adapter"
    try:
        fs.get(str(ADAPTER_DIR), str(adapter_dir), recursive=True)
    except Exception as exc:  # noqa: BLE001 - DVC raises many kinds; the user needs one line
        tmp.cleanup()
        raise UseError(f"--exp {exp}: its {ADAPTER_DIR} is not in the local DVC cache ({type(exc).__name__}); "
                       "`dvc exp pull` it, or `dvc exp run` it again") from None
    if not (adapter_dir / "adapter_config.json").is_file():
        tmp.cleanup()
        raise UseError(f"--exp {exp}: commit {rev[:7]} has no trained adapter in {ADAPTER_DIR}")
    base_source, params = _source_of(read)
    base_dir = repo / BASE_MODEL_DIR
    if (
        not card.same_base(card.base_model_name(base_source), card.base_model_name(local_source))
        or not base_dir.exists()
    ):
        base_dir = Path(tmp.name) / "base_model"  # that experiment's own base model, from the cache
        try:
            fs.get(str(BASE_MODEL_DIR), str(base_dir), recursive=True)
        except Exception:  # noqa: BLE001
            tmp.cleanup()
            raise UseError(f"--exp {exp}: its base model ({base_source}) is not in the local DVC cache; "
                           "`dvc exp pull` it, or run `dvc exp run` there") from None
    return rev, adapter_dir, base_dir, base_source, read, params, tmp


def resolve(repo: str | Path = ".", exp: str | None = None, adapter: str | None = None) -> Source:
    """The adapter to use: --adapter DIR, --exp NAME, else the workspace's."""
    repo = Path(repo).resolve()
    tmp = None
    workspace_read = _workspace_reader(repo)
    local_source, local_params = _source_of(workspace_read)
    read, revision, params = workspace_read, None, local_params
    if adapter is not None:
        adapter_dir = Path(adapter)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise UseError(f"--adapter {adapter}: no adapter_config.json there (an adapter directory: "
                           "checkpoints/adapter, or one written by `spelltune export --peft`)")
        label, base_dir, read = str(adapter_dir), repo / BASE_MODEL_DIR, None
        base_source = local_source
    elif exp is not None:
        rev, adapter_dir, base_dir, base_source, read, params, tmp = _from_experiment(repo, exp, local_source)
        label, revision = f"experiment {exp}", rev[:7]
    else:
        adapter_dir, label, base_dir, base_source = repo / ADAPTER_DIR, "workspace", repo / BASE_MODEL_DIR, local_source
        if not (adapter_dir / "adapter_config.json").is_file():
            raise UseError(f"{ADAPTER_DIR}: no trained adapter in {repo}; run `make run` or `dvc exp run` first, "
                           "or pass --exp NAME or --adapter DIR")
        revision = _git(repo, "rev-parse", "--short", "HEAD") or None

    try:
        _check_base(adapter_dir, base_dir, base_source, repo)
    except UseError:
        if tmp is not None:
            tmp.cleanup()
        raise
    facts = _adapter_facts(adapter_dir)

    on_card = {"model": facts or {}, "data": (facts or {}).get("data") or {}}  # the card keeps model facts on top

    def trained(section: str, key: str) -> str:
        """How the adapter was trained: its model card's facts, else its commit's params, else
        the schema's default (params.BEFORE_THE_KEY: what params older than the key meant)."""
        for known in (on_card[section], params.get(section) or {}):
            if known.get(key) is not None:
                return known[key]
        return schema_default(f"{section}.{key}")

    extra = {k: params[k] for k in ("data", "eval") if isinstance(params.get(k), dict)} if read is not None else {}
    return Source(
        label, adapter_dir, base_dir, facts=facts, read=read, revision=revision, extra_params=extra, _tmp=tmp,
        prompt_format=trained("model", "prompt_format"),
        separator=trained("data", "spelling_separator"),
        letter_answer=trained("data", "letter_answer"),
        batch_size=(params.get("eval") or {}).get("batch_size") or schema_default("eval.batch_size"),
    )


def _check_base(adapter_dir: Path, base_dir: Path, base_source: str, repo: Path) -> None:
    """The adapter was trained on the model in base_dir (by name: adapter_config.json's against
    the model.source that built base_dir), or one line says what is wrong."""
    if not (base_dir / "config.json").is_file():
        raise UseError(f"{base_dir}: no base model here; run `dvc exp run` (its prepare_model stage) in {repo} first")
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    trained_on = str(config.get("base_model_name_or_path") or "")
    here = card.base_model_name(base_source)
    # Adapters saved before the name was recorded say "data/base_model": nothing to check.
    if trained_on and Path(trained_on) != BASE_MODEL_DIR and not card.same_base(trained_on, here):
        raise UseError(f"adapter {adapter_dir}: trained on base model {trained_on!r}, but {base_dir} holds {here!r} "
                       f"(model.source = {base_source}); use it where that model is, or pass --exp NAME")


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


# ------------------------------------------------------------------------- export


def full_card(source: Source, merged: bool = False) -> str:
    """The model card with evaluate's metrics (when the source has them)."""
    facts = source.facts
    if facts is None:  # an adapter trained before cards were written: what its commit's params say
        from spelltune.params import parse

        params = parse(_params_at(source.read("params.yaml")) if source.read else {})
        facts = card.training_facts(params, None, data_dir=Path("/nonexistent"))
    details, details_source, base_details = None, "", None
    if source.read is not None:
        details, details_source = card.evaluation(source.read, "eval")
        base_details, _ = card.evaluation(source.read, "base")
    return card.render(facts, merged=merged, details=details, details_source=details_source,
                       base_details=base_details, extra_params=source.extra_params, revision=source.revision)


def export_peft(source: Source, out_dir: Path) -> None:
    """The adapter's files and the full model card: a directory to share (e.g. on the HF Hub)."""
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
