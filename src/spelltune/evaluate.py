"""Stages `evaluate_base` and `evaluate`: greedy answers on validation and test words.

    python -m spelltune.evaluate --base   # the base model, once (its deps never change per experiment)
    python -m spelltune.evaluate          # base model + checkpoints/adapter

Writes metrics/{base,eval}.json (DVC metrics: val/* and test/*), the breakdowns by word
length and letter position, and per-item predictions for error analysis.
"""

from __future__ import annotations

import argparse
import logging
import time

from spelltune.params import load_pinned_or_exit
from spelltune.paths import METRICS_DIR
from spelltune.startup import loaded, pause_collector

log = logging.getLogger("spelltune.evaluate")

SPLIT_PREFIX = {"validation": "val", "test": "test"}


def load_model(base: bool):
    import torch

    from spelltune.model import load_base_model
    from spelltune.paths import ADAPTER_DIR

    model, tokenizer = load_base_model()
    if not base:
        from peft import PeftModel

        # The adapter is device- and backend-independent safetensors: one trained with
        # Unsloth on a GPU loads here onto the fp32 base model like one trained on the CPU.
        model = PeftModel.from_pretrained(model, ADAPTER_DIR).merge_and_unload()
    if torch.cuda.is_available():  # this worker's GPU (spelltune.devices), fp32 weights
        model = model.to("cuda")
    return model, tokenizer


def evaluate(params, base: bool) -> None:
    from spelltune.data import read_jsonl, write_json, write_jsonl
    from spelltune.devices import claim_worker
    from spelltune.generation import generate_replies
    from spelltune.metrics import breakdown, score_item, summarize
    from spelltune.model import set_threads

    set_threads(claim_worker(params.train.threads).threads)  # before torch touches CUDA
    name = "base" if base else "eval"
    model, tokenizer = load_model(base)
    loaded()
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

    write_json(metrics, METRICS_DIR / f"{name}.json")
    write_json(breakdowns, METRICS_DIR / f"{name}_breakdown.json")
    write_jsonl(predictions, METRICS_DIR / "predictions" / f"{name}.jsonl")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spelltune.evaluate", description=__doc__)
    parser.add_argument("--base", action="store_true", help="score the base model instead of the fine-tuned one")
    pause_collector()
    args = parser.parse_args(argv)
    params, pin = load_pinned_or_exit("evaluate_base" if args.base else "evaluate")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    evaluate(params, args.base)
    pin.check_or_exit()  # params.yaml changed under this stage: exit non-zero so that DVC records nothing


if __name__ == "__main__":
    main()
