"""The report of one run: its training curves and its evaluation, as plots/*.png and a
Markdown page (the report stage writes them)."""

from __future__ import annotations

import json
from pathlib import Path

from spelltune.metric_names import EVAL_METRICS
from spelltune.paths import CURVES_DIR, METRICS_DIR

MODELS = {"base": "base model", "eval": "fine-tuned"}
SHORT = {
    "letter_position_accuracy": "letter\naccuracy",
    "spelling_exact_match": "spelling\nexact match",
    "char_error_rate": "char error rate\n(lower is better)",
}


# metrics/headline.json's names: short, so that `dvc exp show --only-changed` of a grid
# fits 120 columns with its params (docs/compare.md).
HEADLINE_KEYS = {"letter_position_accuracy": "letter", "spelling_exact_match": "spell"}


def headline(details: dict[str, dict]) -> dict:
    """The numbers `dvc exp show` lists, from {"base": base_details, "eval": eval_details}:
    letter accuracy and spelling exact match of the fine-tuned model on validation (all
    items: it chooses), spelling on the top 1,000 words as users meet them (`vocab`: trained
    words included, never used to choose; its trained and held-out parts are in
    metrics/eval.json), and on the common-words
    test set (`common`, where test was scored), to three decimals. Few columns, so that a
    grid's table with its params stays within 120 columns; every other score is in
    metrics/eval.json, metrics/base.json and the report."""

    def scores(found: dict) -> dict:
        return {short: round(found[name]["value"], 3) for name, short in HEADLINE_KEYS.items() if name in found}

    tuned = details["eval"]
    out = {"val": scores(tuned["val"])}
    vocabulary = tuned.get("vocabulary", {}).get("groups", {})
    if "top1k" in vocabulary:  # one column: a grid's table keeps its params within 120 columns
        out["vocab"] = {"spell": scores(vocabulary["top1k"])["spell"]}
    common = tuned.get("test", {}).get("groups", {}).get("common")
    if common:  # evaluate wrote frequency bands (runs from before them have none) and scored test
        # spelling only when the vocabulary has its column: four numbers fit 120 columns with a grid's params
        out["common"] = scores(common) if "vocab" not in out else {"spell": scores(common)["spell"]}
    return out


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def read_curve(name: str):
    import pandas as pd

    path = CURVES_DIR / f"{name}.tsv"
    return pd.read_csv(path, sep="\t") if path.exists() else None


def stop_note(run: dict) -> str:
    """How training ended, e.g. 'early stopping at step 60 (best step 40)'."""
    reason = run.get("early_stop_reason", "max_steps").replace("_", " ")
    return f"{reason} at step {run.get('stopped_at_step')} (best step {run.get('best_step')})"


def plot_loss(run: dict, out: Path) -> None:
    """Train and val loss by step; the best step and, when training stopped early, the stop."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, style in (("train/loss", "-"), ("val/loss", "o--")):
        curve = read_curve(name)
        if curve is not None:
            ax.plot(curve["step"], curve[name.split("/")[1]], style, label=name)
    if run.get("best_step"):
        ax.axvline(run["best_step"], color="tab:green", linestyle=":", label=f"best step {run['best_step']}")
    if run.get("early_stop_reason", "max_steps") != "max_steps":
        ax.axvline(run["stopped_at_step"], color="tab:red", linestyle="--", label=stop_note(run).split(" (")[0])
    ax.set(xlabel="optimizer step", ylabel="loss (answer tokens)", title="Training loss", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_breakdown(breakdowns: dict, key: str, metrics: tuple[str, ...], xlabel: str, out: Path) -> None:
    """One panel per metric: base vs fine-tuned on the test split (validation where a sweep
    trial left test out), by `key`."""
    import matplotlib.pyplot as plt
    import numpy as np

    split = "test" if "test" in breakdowns["eval"] else "val"
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        groups = list(breakdowns["eval"][split][key])
        x = np.arange(len(groups))
        for offset, (model, label) in zip((-0.2, 0.2), MODELS.items()):
            values = [breakdowns[model][split][key].get(g, {}).get(metric) for g in groups]
            ax.bar(x + offset, [v if v is not None else 0 for v in values], width=0.4, label=label)
        ax.set_xticks(x, groups)
        ax.set(xlabel=xlabel, ylabel=metric, ylim=(0, 1), title=f"{metric} by {xlabel} ({split})")
        ax.grid(axis="y", alpha=0.3)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="upper right", ncol=2)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_side_by_side(details: dict, out: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [f"{split}/{m}" for split in ("val", "test") for m in EVAL_METRICS]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(10, 4))
    for offset, (model, label) in zip((-0.2, 0.2), MODELS.items()):
        values = [details[model].get(k.split("/")[0], {}).get(k.split("/")[1], {}).get("value") for k in labels]
        ax.bar(x + offset, [v or 0 for v in values], width=0.4, label=label)
    ax.set_xticks(x, [f"{lbl.split('/')[0]}\n{SHORT[lbl.split('/')[1]]}" for lbl in labels], fontsize=8)
    ax.set(ylim=(0, 1), title="Base model vs fine-tuned")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def examples(path: Path, n: int = 8) -> list[dict]:
    """Some answers of the fine-tuned model, for a first look: wrong ones on the test split
    (validation where test was left out), and on the vocabulary users meet, right and wrong."""
    from spelltune.files import read_jsonl

    rows = read_jsonl(path)
    split = "test" if any(r["split"] == "test" for r in rows) else "validation"
    wrong = [r for r in rows if r["split"] == split and not r["correct"]]
    return wrong[:n]


def vocabulary_lines(details: dict) -> list[str]:
    """What users meet: the most frequent words, trained ones included (labelled), each with n
    and its 95 % interval; [] for runs from before the vocabulary was scored."""
    from spelltune.task.scoring import VOCABULARY_LABELS

    found = details["eval"].get("vocabulary", {}).get("groups", {})
    if not found:
        return []
    lines = ["## What users meet: the most frequent words", "",
             "Everyday words as users ask about them: **trained words included** (this measures what the "
             "model knows, not how it generalises; the held-out splits below do that, and choose). "
             "One spelling and one letter question a word, canonical wording.", "",
             "| words | spelling n | spelling exact match | letter n | letter accuracy |", "|---|---|---|---|---|"]
    for group, label in VOCABULARY_LABELS.items():
        if group in found:
            spell, letter = found[group].get("spelling_exact_match"), found[group].get("letter_position_accuracy")
            lines.append(f"| {label} | {(spell or {}).get('n', '–')} | {cell(spell)} | "
                         f"{(letter or {}).get('n', '–')} | {cell(letter)} |")
    return lines + [""]


def cell(found: dict | None) -> str:
    """`0.600 [0.560, 0.638]` from a details entry (value, 95 % interval)."""
    if not found:
        return "–"
    return f"{found['value']:.3f} [{found['ci_low']:.3f}, {found['ci_high']:.3f}]"


def _group_table(details: dict) -> list[str]:
    """Letter accuracy and spelling exact match per frequency band and wording, val and test."""
    from spelltune.task.scoring import GROUP_LABELS

    tuned = details["eval"]
    if not any(tuned.get(split, {}).get("groups") for split in ("val", "test")):
        return []
    lines = ["", "By frequency band and by wording (fine-tuned; base model in metrics/base_details.json):", "",
             "| subset | split | letter n | letter accuracy | spelling n | spelling exact match |",
             "|---|---|---|---|---|---|"]
    for group, label in GROUP_LABELS.items():
        for split in ("val", "test"):
            found = tuned.get(split, {}).get("groups", {}).get(group)
            if found:
                letter, spell = found.get("letter_position_accuracy"), found.get("spelling_exact_match")
                lines.append(f"| {label} | {split} | {(letter or {}).get('n', '–')} | {cell(letter)} "
                             f"| {(spell or {}).get('n', '–')} | {cell(spell)} |")
    return lines


def markdown(params, details: dict, train_summary: dict, run: dict) -> str:
    lines = [
        "# spelltune run report",
        "",
        f"Model `{params.model.source}`, prompt `{params.model.prompt_format}`; "
        f"LoRA r={params.lora.r}, alpha={params.lora.alpha:g}, dropout={params.lora.dropout:g}, "
        f"targets {', '.join(params.lora.target_modules)}; "
        f"lr={params.train.lr:g}, batch {params.train.batch_size}×{params.train.grad_accum_steps}, "
        f"{params.train.max_steps} steps.",
        "",
        *vocabulary_lines(details),
        "Validation chooses, test confirms: compare experiments on val/, read test/ once per "
        "finished recipe. Each score with its 95 % interval (Wilson; bootstrap for the char "
        "error rate) and n, the items of its task; base model and fine-tuned on the same items.",
        "",
        "| metric | n | base model | fine-tuned |",
        "|---|---|---|---|",
    ]
    for split in ("val", "test"):
        for m in EVAL_METRICS:
            if split not in details["eval"]:  # a sweep trial: test is read for the finalists only
                lines.append(f"| {split}/{m} | – | not scored (eval.test: false) | – |")
                continue
            base, tuned = details["base"][split].get(m), details["eval"][split].get(m)
            n = (tuned or base or {}).get("n", "–")
            lines.append(f"| {split}/{m} | {n} | {cell(base)} | {cell(tuned)} |")
    lines += _group_table(details)
    time_ = train_summary.get("time", {})
    lines += [
        "",
        f"Training: final train/loss {fmt(train_summary.get('train', {}).get('loss'))}, "
        f"val/loss {fmt(train_summary.get('val', {}).get('loss'))}, "
        f"{time_.get('wallclock_hours', 0) * 60:.1f} min, {int(time_.get('tokens_seen', 0))} tokens; "
        f"{stop_note(run)}.",
        "",
        "![loss](loss.png)",
        "",
        "![base vs fine-tuned](base_vs_finetuned.png)",
        "",
        "![by length](accuracy_by_length.png)",
        "",
        "![by position](accuracy_by_position.png)",
        "",
        "## Some wrong answers (held-out words)",
        "",
        "| question | expected | reply |",
        "|---|---|---|",
    ]
    for r in examples(METRICS_DIR / "predictions" / "eval.jsonl"):
        reply = r["reply"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['question']} | {r['answer']} | {reply} |")
    return "\n".join(lines) + "\n"
