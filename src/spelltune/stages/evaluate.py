"""Stages `evaluate_base` and `evaluate`: greedy answers on validation and test words.

    python -m spelltune.stages.evaluate --base   # the base model, once (its deps never change per experiment)
    python -m spelltune.stages.evaluate          # base model + checkpoints/adapter

Writes metrics/{base,eval}.json (the val/* and test/* scores that `spelltune compare` and
the sweeps read, over all items and per subset: val/common/..., val/held_out/...; the
report stage picks `dvc exp show`'s few columns), metrics/{base,eval}_details.json
(each metric's n and 95 % interval, per subset too, evaluation times), the breakdowns by
word length, tokens of the word, frequency band and letter position, and per-item
predictions for error analysis. Every split is scored whole: its size is
`data.validation_words` / `data.test_words` words, ITEMS_PER_HELD_OUT_WORD items each;
`eval.test: false` (sweep trials) leaves test out and says so (`test/skipped`). The
fine-tuned model is also scored on data/vocabulary.jsonl, what users meet: the most
frequent words, trained ones included (vocabulary/top1k/..., vocabulary/top1k_trained/...,
vocabulary/train_questions/...), never used to choose.
"""

from __future__ import annotations

import argparse
import logging
import time

from spelltune.paths import METRIC_PREFIX, METRICS_DIR
from spelltune.training.startup import loaded, pause_collector
from spelltune.workspace import load_pinned_or_exit

log = logging.getLogger("spelltune.stages.evaluate")


def evaluate(params, base: bool) -> None:
    from spelltune.files import read_jsonl, write_json, write_jsonl
    from spelltune.metric_names import EVAL_METRICS
    from spelltune.modeling.base import set_threads
    from spelltune.modeling.generation import generate_replies
    from spelltune.modeling.lora import load_merged
    from spelltune.paths import ADAPTER_DIR
    from spelltune.task.prompts import word_tokens
    from spelltune.task.scoring import (
        VOCABULARY_SPLIT,
        breakdown,
        details,
        group_details,
        score_item,
        vocabulary_details,
    )
    from spelltune.training.devices import claim_worker

    # The base model's scores must not depend on train.threads (else every sweep trial that
    # sets it would score the base model again): it takes its share of the cores.
    set_threads(claim_worker(0 if base else params.train.threads).threads)  # before torch touches CUDA
    name = "base" if base else "eval"
    model, tokenizer = load_merged(None if base else ADAPTER_DIR)
    loaded()
    metrics, intervals, breakdowns, predictions = {}, {}, {}, []

    def answered(split: str) -> tuple[list[dict], float]:
        items = read_jsonl(f"data/{split}.jsonl")
        start = time.perf_counter()
        replies = generate_replies(
            model, tokenizer, items, params.model.prompt_format, params.eval.batch_size, chatty=base,
            letter_answer=params.data.letter_answer,
        )
        seconds = time.perf_counter() - start
        tokens = {w: word_tokens(w, params.model.prompt_format, tokenizer) for w in {it["word"] for it in items}}
        return [{**it, "split": split, "reply": r, "word_tokens": tokens[it["word"]], **score_item(it, r)}
                for it, r in zip(items, replies)], seconds

    for split, prefix in METRIC_PREFIX.items():
        if split == "test" and not (base or params.eval.test):
            # A sweep trial: test is read once, for the finalists (`spelltune finalize`).
            metrics[f"{prefix}/skipped"] = 1
            log.info("%s %s: skipped (eval.test: false)", name, split)
            continue
        rows, seconds = answered(split)
        predictions += rows
        found, subsets = details(rows), group_details(rows)
        metrics.update({f"{prefix}/{k}": found[k]["value"] for k in EVAL_METRICS if k in found})
        metrics.update({f"{prefix}/{g}/{k}": d[k]["value"] for g, d in subsets.items() for k in EVAL_METRICS if k in d})
        intervals[prefix] = {**found, "n_items": len(rows), "eval_time_seconds": seconds, "groups": subsets}
        breakdowns[prefix] = breakdown(rows)
        log.info("%s %s: %s (%d items, %.1f s)", name, split,
                 ", ".join(f"{k} {v['value']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]" for k, v in found.items()),
                 len(rows), seconds)

    if not base and params.data.vocabulary_sample:  # what users meet: the most frequent words, trained ones included
        rows, seconds = answered(VOCABULARY_SPLIT)
        predictions += rows
        subsets = vocabulary_details(rows)
        metrics.update({f"{VOCABULARY_SPLIT}/{g}/{k}": d[k]["value"] for g, d in subsets.items()
                        for k in EVAL_METRICS if k in d})
        intervals[VOCABULARY_SPLIT] = {"n_items": len(rows), "eval_time_seconds": seconds, "groups": subsets}
        log.info("eval vocabulary: %s (%d items, %.1f s)", ", ".join(
            f"{g} spelling {d['spelling_exact_match']['value']:.3f}" for g, d in subsets.items()
            if "spelling_exact_match" in d), len(rows), seconds)

    # base.json nests its numbers under "base", so that compare names them base.val/... apart
    # from the fine-tuned model's val/... of eval.json.
    write_json({"base": metrics} if base else metrics, METRICS_DIR / f"{name}.json")
    write_json(intervals, METRICS_DIR / f"{name}_details.json")
    if not base:  # the final val/test scores join the training's W&B run (what W&B sweeps optimise)
        from spelltune.training.wandb_eval import add_to_training_run

        add_to_training_run(metrics)
    write_json(breakdowns, METRICS_DIR / f"{name}_breakdown.json")
    write_jsonl(predictions, METRICS_DIR / "predictions" / f"{name}.jsonl")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spelltune.stages.evaluate", description=__doc__)
    parser.add_argument("--base", action="store_true", help="score the base model instead of the fine-tuned one")
    pause_collector()
    args = parser.parse_args(argv)
    params, pin = load_pinned_or_exit("evaluate_base" if args.base else "evaluate")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    from spelltune.errors import fail
    from spelltune.files import DataFileError

    try:
        evaluate(params, args.base)
    except DataFileError as exc:
        fail(str(exc))
    pin.check_or_exit()  # params.yaml changed under this stage: exit non-zero so that DVC records nothing


if __name__ == "__main__":
    main()
