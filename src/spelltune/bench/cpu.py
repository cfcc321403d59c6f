"""`make bench`: train and evaluate speed, measured side by side in one run, CPU, fixed
data and hparams; figures to bench/results.json (never asserted by a test).

    python -m spelltune.bench [--model data/base_model] [--steps 10] [--out bench/results.json]

- train: (a) the plain recipe — HF Trainer + PEFT, the model's chat template with its
  system prompt, padding to the longest in the batch, the model's own loss with
  full-vocabulary logits at every position — against (b) our train stage's trainer
  (compact prompt, logits and loss at answer positions only, packed batches), the median
  of 3 runs spread over the others. train_speedup = (b)/(a) in examples/s;
  mfu = (4·N_frozen + 6·N_trainable)·tokens/s ÷ gemm_gflops.
  Levers, each (b) against (b) with that one thing as in (a) or as before:
  compact_prompt_speedup = against the chat template's prompt; answer_logits_speedup =
  against the model's own full-logits loss; packing_speedup = against padded batches;
  packed_attention_speedup = against transformers' block-diagonal mask over the row;
  no_dropout_speedup = against lora.dropout 0.05; all_threads_speedup = against half as
  many torch threads (the train stage uses one per core); spaced_speedup = (b) with
  spelling answers as "b a n a n a" against (b).
- tracking: the same short training of (b) with DVCLive + W&B (offline) + the metrics
  callback on and off, interleaved (4 pairs); tracking_overhead = median on / median off − 1.
- evaluate, per task (letter, spelling): the evaluate stage's batched greedy generation
  with batches of eval.batch_size, twice and four times it (batched, batched_x2,
  batched_x4) against a per-example generate loop, on the same validation items;
  <path>_speedup in items/s over the loop, the shares of
  replies identical to the loop's, and `chat`'s answer time to one 10-letter spelling
  question, the model loaded.
- overheads: a no-op `dvc exp run`; the train stage's start-up (process start to its
  first optimizer step, median of 3 fresh processes); DVC's cache type.

Longer than the project's ~300 lines on purpose: every figure of bench/results.json is
measured in this one run, side by side, so that its ratios compare like with like.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

log = logging.getLogger("spelltune.bench")


def gemm_gflops(n: int = 2048, repeats: int = 10) -> float:
    """fp32 matrix-multiply throughput of this machine, GFLOP/s (best of `repeats`)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# How each recipe trains: prompt format, loss (answer: logits and loss at answer positions
# only; full: the model's own loss, full-vocabulary logits at every position) and batches
# (packed: one row cut per example for attention by spelltune.modeling.attention; masked: one row
# under transformers' block-diagonal mask; padded: padded to the longest).
RECIPES = {
    "plain": {"prompt": "chat_template", "loss": "full", "batches": "padded"},  # (a)
    "ours": {"prompt": "compact", "loss": "answer", "batches": "packed"},  # (b), the train stage's defaults
    "padded": {"prompt": "compact", "loss": "answer", "batches": "padded"},
    "masked": {"prompt": "compact", "loss": "answer", "batches": "masked"},
    "chat_prompt": {"prompt": "chat_template", "loss": "answer", "batches": "packed"},
    "full_logits": {"prompt": "compact", "loss": "full", "batches": "packed"},
}


def train_rate(model_dir: Path, items: list[dict], recipe: str, steps: int, warmup: int, batch: int,
               callbacks=(), out_dir: Path | None = None, lora_dropout: float | None = None,
               threads: int | None = None) -> dict:
    """Examples and non-padding tokens per second over `steps` optimizer steps after
    `warmup` untimed ones, for one of RECIPES. lora_dropout: instead of the params default;
    threads: torch's intra-op threads for this run (default: as set, one per core)."""
    import torch
    from transformers import Trainer, TrainingArguments, set_seed

    from spelltune.bench.clock import step_clock
    from spelltune.modeling.base import load_base_model
    from spelltune.modeling.lora import build_lora_model
    from spelltune.params import LoraParams
    from spelltune.training.collators import collator, encode_example
    from spelltune.training.trainer import AnswerLossTrainer

    set_seed(0)
    model, tokenizer = load_base_model(model_dir)
    model = build_lora_model(model, LoraParams() if lora_dropout is None else LoraParams(dropout=lora_dropout))
    trainable, total = model.get_nb_trainable_parameters()
    how = RECIPES[recipe]
    if how["batches"] == "packed":
        from spelltune.modeling.attention import use_packed_attention

        use_packed_attention(model)
    data = [encode_example(it, tokenizer, how["prompt"]) for it in items]
    packed = how["batches"] != "padded"
    clock = step_clock((warmup, warmup + steps))
    trainer_class = Trainer if how["loss"] == "full" else AnswerLossTrainer
    args = TrainingArguments(
        output_dir=str(out_dir or tempfile.mkdtemp()), per_device_train_batch_size=batch, max_steps=warmup + steps,
        learning_rate=1e-3, warmup_steps=0, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        include_num_input_tokens_seen="all" if packed else "non_padding", dataloader_pin_memory=False, seed=0,
        data_seed=0,
    )
    trainer = trainer_class(model=model, args=args, train_dataset=data,
                            data_collator=collator(packed, tokenizer.pad_token_id), callbacks=[clock, *callbacks])
    all_threads = torch.get_num_threads()
    torch.set_num_threads(threads or all_threads)
    try:
        start = time.perf_counter()
        trainer.train()
        total_seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(all_threads)
    seconds, tokens = clock.between(warmup, warmup + steps)
    return {
        "examples_per_second": steps * batch / seconds,
        "nonpad_tokens_per_second": tokens / seconds,
        "timed_seconds": seconds,
        "total_seconds": total_seconds,
        "parameters": {"total": total, "trainable": trainable},
    }


def tracking_overhead(model_dir: Path, items: list[dict], steps: int, batch: int, repeats: int) -> dict:
    """The same short training with tracking on and off, interleaved. Training seconds,
    plus, when on, creating the trackers and finishing them (W&B's start itself runs in a
    thread during the training, as in the train stage); every step is logged (the worst case:
    runs log every train.log_every steps). Two figures: the difference of the totals
    (includes W&B's writer process competing for the cores, but carries the run-to-run
    noise, hence medians of several pairs) and the seconds spent inside the trackers' calls
    (precise, in-process only)."""
    import statistics

    from dvclive import Live

    from spelltune.training.tracking import MetricsCallback
    from spelltune.training.wandb_run import WandbRun

    class TimedMetrics(MetricsCallback):
        spent = 0.0

        def on_log(self, *args, **kwargs):
            start = time.perf_counter()
            super().on_log(*args, **kwargs)
            self.spent += time.perf_counter() - start

    seconds = {"off": [], "on": [], "in_trackers": []}
    env = {"WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, {**env, "WANDB_DIR": tmp}):
        for i in range(repeats):
            seconds["off"].append(train_rate(model_dir, items, "ours", steps, 0, batch)["total_seconds"])
            start = time.perf_counter()
            live = Live(dir=f"{tmp}/live{i}", dvcyaml=None, save_dvc_exp=False)
            wandb_run = WandbRun(name=f"bench-{i}", config={}, tags=["bench"], group=None)
            metrics = TimedMetrics(live, steps, "val/loss", wandb_run)
            setup = time.perf_counter() - start
            trained = train_rate(model_dir, items, "ours", steps, 0, batch, callbacks=[metrics])["total_seconds"]
            start = time.perf_counter()
            live.end()
            wandb_run.finish({})
            finish = time.perf_counter() - start
            seconds["on"].append(setup + trained + finish)
            seconds["in_trackers"].append(setup + metrics.spent + finish)
    off, on = statistics.median(seconds["off"]), statistics.median(seconds["on"])
    return {**{f"seconds_{k}": v for k, v in seconds.items()}, "tracking_overhead": on / off - 1,
            "tracking_share_in_process": sum(seconds["in_trackers"]) / sum(seconds["on"])}


def eval_rate(model_dir: Path, items: list[dict], batch: int, letter_answer: str) -> dict:
    """Per task: the evaluate stage's batched generation at eval.batch_size, twice and four
    times it, against a per-example generate loop on the same items, with each one's share
    of replies identical to the loop's; and `chat`'s answer time to one 10-letter spelling
    question with the model loaded."""
    import statistics

    import torch

    from spelltune.modeling.base import load_base_model
    from spelltune.modeling.generation import generate_replies, max_new_tokens
    from spelltune.paths import ADAPTER_DIR
    from spelltune.task.prompts import render_prompt
    from spelltune.task.questions import spelling_question

    model, tokenizer = load_base_model(model_dir)
    if (ADAPTER_DIR / "adapter_config.json").exists() and model_dir.resolve() == Path("data/base_model").resolve():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, ADAPTER_DIR).merge_and_unload()
    model.eval()

    def one_by_one(rows: list[dict]) -> list[str]:
        replies = []
        with torch.inference_mode():
            for it in rows:
                enc = tokenizer(
                    render_prompt(it["question"], "compact", tokenizer), return_tensors="pt", add_special_tokens=False
                )
                out = model.generate(**enc, max_new_tokens=max_new_tokens(it, letter_answer=letter_answer),
                                     do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                     pad_token_id=tokenizer.pad_token_id)
                replies.append(tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip())
        return replies

    paths = {"loop": one_by_one, **{
        name: (lambda rows, size=size: generate_replies(model, tokenizer, rows, "compact", size,
                                                        letter_answer=letter_answer))
        for name, size in (("batched", batch), ("batched_x2", 2 * batch), ("batched_x4", 4 * batch))}}
    found: dict = {"adapter": (ADAPTER_DIR / "adapter_config.json").exists(), "batch_size": batch}
    for task in ("letter_position", "spelling"):
        rows = [it for it in items if it["task"] == task]
        replies, rate = {}, {}
        for name, generate in paths.items():
            start = time.perf_counter()
            replies[name] = generate(rows)
            rate[name] = len(rows) / (time.perf_counter() - start)
        found[task] = {"items": len(rows), **{f"{name}_items_per_second": r for name, r in rate.items()},
                       **{f"{name}_speedup": rate[name] / rate["loop"] for name in rate if name != "loop"},
                       **{f"{name}_identical": _agreement(replies[name], replies["loop"]) for name in rate}}
    question = [spelling_question("strawberry", " ")]  # ten letters
    seconds = [_timed(lambda: paths["batched"](question)) for _ in range(5)]
    found["chat_seconds_10_letter_spelling"] = statistics.median(seconds)
    return found


def _agreement(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b)) / len(a)


def _workspace_params():
    """params.yaml's values, or the schema's defaults where there is none."""
    import yaml

    from spelltune.params import Params

    return Params(**yaml.safe_load(Path("params.yaml").read_text())) if Path("params.yaml").exists() else Params()


def train_startup(model_dir: Path, data_dir: Path, runs: int) -> list[float]:
    """The train stage's start-up (process start to its first optimizer step), each in a
    fresh `python -m spelltune.stages.train` in a scratch workspace: this model and data linked in,
    params.yaml's values (or the defaults) with one step and no validation, on the CPU
    like the rest of the bench."""
    import subprocess
    import sys

    import yaml

    config = _workspace_params().model_dump()
    config["train"].update(max_steps=1, warmup_steps=0, log_every=1, save_every=1, val_loss_items=0,
                           val_generate_items=0, early_stop_patience=0)
    seconds = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "data").mkdir()
            (Path(tmp) / "data" / "base_model").symlink_to(model_dir.resolve())
            for split in ("train", "validation"):
                (Path(tmp) / "data" / f"{split}.jsonl").symlink_to((data_dir / f"{split}.jsonl").resolve())
            (Path(tmp) / "params.yaml").write_text(yaml.safe_dump(config))
            env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), "WANDB_DIR": tmp,
                   "CUDA_VISIBLE_DEVICES": ""}
            done = subprocess.run(
                [sys.executable, "-m", "spelltune.stages.train"], cwd=tmp, env=env, capture_output=True, text=True
            )
            if done.returncode:
                raise RuntimeError(f"train stage failed in {tmp}:\n{done.stderr[-2000:]}")
            seconds.append(json.loads((Path(tmp) / "metrics" / "summary.json").read_text())["seconds_to_first_step"])
    return seconds


def overheads(model_dir: Path, data_dir: Path, startup_runs: int) -> dict:
    """Pipeline overheads: a no-op `dvc exp run` in the repository this runs in (timed only
    when every stage is up to date), the train stage's start-up (median of fresh
    processes) and DVC's cache type."""
    import statistics

    from spelltune.repo import dvc

    result: dict = {}
    status = dvc("status", "--json")
    # Up to date but for `validate`, which always runs (part of a no-op's cost too).
    stale = status.returncode != 0 or any(
        why != ["always changed"] for why in json.loads(status.stdout or "{}").values()
    )
    if not stale:
        start = time.perf_counter()
        dvc("exp", "run", check=True)
        result["noop_dvc_exp_run_seconds"] = time.perf_counter() - start
    else:
        result["noop_dvc_exp_run_seconds"] = None
        result["noop_dvc_exp_run_note"] = "not timed: the pipeline is not up to date (run `make run` first)"
    try:  # a failure here must not cost the figures measured before it
        result["train_seconds_to_first_step_runs"] = train_startup(model_dir, data_dir, startup_runs)
        result["train_seconds_to_first_step"] = statistics.median(result["train_seconds_to_first_step_runs"])
    except (RuntimeError, OSError, ValueError) as exc:
        log.warning("train start-up not timed: %s", exc)
        result["train_seconds_to_first_step"] = None
        result["train_seconds_to_first_step_note"] = f"not timed: {str(exc)[:500]}"
    # How a queued experiment's workspace gets the base model: linked from the cache, not
    # copied, when this starts with hardlink or symlink (measured in docs/results.md).
    result["dvc_cache_type"] = dvc("config", "cache.type").stdout.strip() or None
    return result


def _arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="data/base_model", help="model directory (default: %(default)s)")
    parser.add_argument("--data", default="data", help="directory with train.jsonl and validation.jsonl")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=16)
    # Four batches of the evaluate stage's eval.batch_size, about half of each task (docs/results.md).
    parser.add_argument("--eval-items", type=int, default=256)
    parser.add_argument(
        "--tracking-pairs", type=int, default=4, help="tracked/untracked run pairs (default: %(default)s)"
    )
    parser.add_argument(
        "--startup-runs", type=int, default=3, help="fresh train-stage processes timed (default: %(default)s)"
    )
    parser.add_argument("--eval-only", action="store_true",
                        help="only the GEMM rate and the evaluate figures (a minute or two; give another --out)")
    parser.add_argument("--out", default="bench/results.json")
    return parser.parse_args(argv)


def train_levers(model_dir: Path, train_items: list[dict], args) -> dict:
    """train_<lever> for each lever of the module docstring, train_ours the median of three runs."""
    import torch

    results = {}
    # The levers (module docstring): each a recipe of RECIPES or ours with one setting changed.
    spaced = [{**it, "answer": " ".join(it["word"])} if it["task"] == "spelling" else it for it in train_items]
    half_threads = max(1, torch.get_num_threads() // 2)
    # Ours runs three times, spread over the list, and every ratio uses the median run: this
    # host has slow spells, and one slow run of ours would skew every lever.
    ours_runs = []
    for name, recipe, items, dropout, threads in (
        ("ours", "ours", train_items, None, None),
        ("plain", "plain", train_items, None, None),
        ("chat_prompt", "chat_prompt", train_items, None, None),
        ("full_logits", "full_logits", train_items, None, None),
        ("ours", "ours", train_items, None, None),
        ("padded", "padded", train_items, None, None),
        ("masked", "masked", train_items, None, None),
        ("dropout", "ours", train_items, 0.05, None),
        ("spaced", "ours", spaced, None, None),
        ("half_threads", "ours", train_items, None, half_threads),
        ("ours", "ours", train_items, None, None),
    ):
        rate = train_rate(model_dir, items, recipe, args.steps, args.warmup, args.batch, lora_dropout=dropout,
                          threads=threads)
        rate["threads"] = threads or torch.get_num_threads()
        log.info("train %s: %s", name, rate)
        if name == "ours":
            ours_runs.append(rate)
        else:
            results[f"train_{name}"] = rate
    ours_runs.sort(key=lambda r: r["examples_per_second"])
    results["train_ours"] = {**ours_runs[len(ours_runs) // 2],
                             "examples_per_second_runs": [r["examples_per_second"] for r in ours_runs]}
    return results


def speedups(results: dict) -> dict:
    """Each lever as ours / without it (spaced: with it / ours), and the model FLOPs utilisation."""
    ours = results["train_ours"]["examples_per_second"]
    rate = {name: results[f"train_{name}"]["examples_per_second"] for name in (
        "plain", "chat_prompt", "full_logits", "padded", "spaced", "masked", "dropout", "half_threads")}
    n_trainable = results["train_ours"]["parameters"]["trainable"]
    n_frozen = results["train_ours"]["parameters"]["total"] - n_trainable
    return {
        "train_speedup": ours / rate["plain"],
        "compact_prompt_speedup": ours / rate["chat_prompt"],
        "answer_logits_speedup": ours / rate["full_logits"],
        "packing_speedup": ours / rate["padded"],
        "spaced_speedup": rate["spaced"] / ours,
        "packed_attention_speedup": ours / rate["masked"],
        "no_dropout_speedup": ours / rate["dropout"],
        "all_threads_speedup": ours / rate["half_threads"],
        "mfu": (4 * n_frozen + 6 * n_trainable) * results["train_ours"]["nonpad_tokens_per_second"]
        / (results["gemm_gflops"] * 1e9),
    }


HEADLINE = ("train_speedup", "compact_prompt_speedup", "answer_logits_speedup", "packing_speedup",
            "packed_attention_speedup", "no_dropout_speedup", "all_threads_speedup", "spaced_speedup", "mfu",
            "eval_letter_position_speedup", "eval_spelling_speedup", "gemm_gflops")


def main(argv=None) -> int:
    args = _arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    import torch

    from spelltune.files import read_jsonl

    model_dir = Path(args.model)
    train_items = read_jsonl(Path(args.data) / "train.jsonl")[: (args.warmup + args.steps) * args.batch]
    val_items = read_jsonl(Path(args.data) / "validation.jsonl")[: args.eval_items]
    workspace = _workspace_params()
    results: dict = {"model": str(model_dir), "threads": torch.get_num_threads(), "steps": args.steps,
                     "warmup": args.warmup, "batch_size": args.batch}
    results["gemm_gflops"] = gemm_gflops()
    log.info("gemm: %.1f GFLOP/s", results["gemm_gflops"])
    if args.eval_only:
        results["eval"] = eval_rate(model_dir, val_items, batch=workspace.eval.batch_size,
                                    letter_answer=workspace.data.letter_answer)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results["eval"], indent=2))
        return 0
    results.update(train_levers(model_dir, train_items, args))
    results.update(speedups(results))
    results["tracking"] = tracking_overhead(
        model_dir, train_items, args.warmup + args.steps, args.batch, args.tracking_pairs
    )
    log.info("tracking: %s", results["tracking"])
    results["eval"] = eval_rate(model_dir, val_items, batch=workspace.eval.batch_size,
                                letter_answer=workspace.data.letter_answer)
    for task in ("letter_position", "spelling"):
        results[f"eval_{task}_speedup"] = results["eval"][task]["batched_speedup"]
    log.info("eval: %s", results["eval"])
    results["overheads"] = overheads(model_dir, Path(args.data), args.startup_runs)
    log.info("overheads: %s", results["overheads"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    summary = {k: results[k] for k in HEADLINE} | {"tracking_overhead": results["tracking"]["tracking_overhead"]}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
