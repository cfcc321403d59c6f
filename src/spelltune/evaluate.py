"""Stages `evaluate_base` and `evaluate`: greedy answers on validation and test words.

    python -m spelltune.evaluate --base   # the base model, once (its deps never change per experiment)
    python -m spelltune.evaluate          # base model + checkpoints/adapter

Writes metrics/{base,eval}.json (DVC metrics: val/* and test/*), the breakdowns by word
length and letter position, and per-item predictions for error analysis.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from spelltune.params import load_or_exit

log = logging.getLogger("spelltune.evaluate")

METRICS_DIR = Path("metrics")
SPLIT_PREFIX = {"validation": "val", "test": "test"}


def max_new_tokens(item: dict, chatty: bool = False) -> int:
    """A tight budget per task: one letter, or letters and separators, then end-of-turn.
    The untrained base model answers in sentences ("The 3rd letter of 'banana' is 'n'."),
    so it gets room for one: it is scored once, not per experiment."""
    budget = 3 if item["task"] == "letter_position" else 2 * len(item["word"]) + 2
    return budget + 24 if chatty else budget


def generate_replies(
    model, tokenizer, items: list[dict], prompt_format: str, batch_size: int, chatty: bool = False
) -> list[str]:
    """Batched, left-padded greedy generation that stops at end-of-turn. Items are
    grouped by task and prompt length so that batches carry little padding."""
    import torch
    from tqdm import tqdm

    from spelltune.model import render_prompt

    tokenizer.padding_side = "left"
    prompts = [render_prompt(it["question"], prompt_format, tokenizer) for it in items]
    order = sorted(range(len(items)), key=lambda i: (items[i]["task"], max_new_tokens(items[i]), len(prompts[i])))
    replies = [""] * len(items)
    model.eval()
    with torch.inference_mode(), tqdm(total=len(items), desc="generate", unit="q") as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(
                **enc,
                max_new_tokens=max(max_new_tokens(items[i], chatty) for i in idx),
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            for i, text in zip(idx, texts):
                replies[i] = text.strip()
            bar.update(len(idx))
    return replies


def load_model(base: bool):
    from spelltune.model import load_base_model
    from spelltune.train import ADAPTER_DIR

    model, tokenizer = load_base_model()
    if not base:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, ADAPTER_DIR).merge_and_unload()
    return model, tokenizer


def evaluate(params, base: bool) -> None:
    from spelltune.data import read_jsonl
    from spelltune.metrics import breakdown, score_item, summarize
    from spelltune.model import set_threads

    set_threads(params.train.threads)
    name = "base" if base else "eval"
    model, tokenizer = load_model(base)
    metrics, breakdowns, predictions = {}, {}, []
    for split, prefix in SPLIT_PREFIX.items():
        items = read_jsonl(f"data/{split}.jsonl")[: params.eval.max_items_per_split]
        start = time.perf_counter()
        replies = generate_replies(
            model, tokenizer, items, params.model.prompt_format, params.eval.batch_size, chatty=base
        )
        seconds = time.perf_counter() - start
        rows = [{**it, "split": split, "reply": r, **score_item(it, r)} for it, r in zip(items, replies)]
        predictions += rows
        metrics.update({f"{prefix}/{k}": v for k, v in summarize(rows).items()})
        metrics[f"{prefix}/eval_time_seconds"] = seconds
        breakdowns[prefix] = breakdown(rows)
        log.info("%s %s: %s (%.1f s)", name, split, summarize(rows), seconds)

    METRICS_DIR.mkdir(exist_ok=True)
    (METRICS_DIR / f"{name}.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (METRICS_DIR / f"{name}_breakdown.json").write_text(json.dumps(breakdowns, indent=2) + "\n")
    pred_dir = METRICS_DIR / "predictions"
    pred_dir.mkdir(exist_ok=True)
    with (pred_dir / f"{name}.jsonl").open("w") as f:
        for row in predictions:
            f.write(json.dumps(row) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spelltune.evaluate", description=__doc__)
    parser.add_argument("--base", action="store_true", help="score the base model instead of the fine-tuned one")
    args = parser.parse_args(argv)
    params = load_or_exit()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    evaluate(params, args.base)


if __name__ == "__main__":
    main()
