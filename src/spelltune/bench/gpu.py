"""GPU benchmark: Unsloth against transformers + PEFT, same data, same hparams.

    python -m spelltune.bench.gpu                    # -> bench/gpu_results.json
    python -m spelltune.bench.gpu --steps 50 --batch-size 32

Trains the LoRA adapter of params.yaml (lora.*, train.lr, train.batch_size, model.dtype,
model.load_in_4bit, model.gradient_checkpointing) on data/train.jsonl (run
`dvc repro prepare prepare_model` first) with our Trainer subclass and loss, once per
backend, each in its own process (importing unsloth patches transformers for the whole
process). It measures, after --warmup steps, answer-and-prompt tokens per second
(non-padding) and the peak GPU memory allocated (torch.cuda.max_memory_allocated).
Without a CUDA GPU it exits with one line and measures nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from spelltune.errors import error

OUT = Path("bench/gpu_results.json")
BACKENDS = ("unsloth", "hf")

log = logging.getLogger("spelltune.bench.gpu")


def measure(name: str, args) -> dict:
    """One backend in this process: load, train warmup + steps, time the steps."""
    from spelltune.modeling import backends as backend
    from spelltune.params import load

    params = load()
    params = params.model_copy(update={"model": params.model.model_copy(update={"backend": name})})
    try:  # imports unsloth (when chosen) before transformers, as it needs
        choice = backend.check_machine(params, import_unsloth=True)
    except backend.BackendError as exc:
        return {"backend": name, "error": str(exc)}

    import torch
    from transformers import TrainingArguments, set_seed

    from spelltune.bench.clock import step_clock
    from spelltune.files import read_jsonl
    from spelltune.paths import BASE_MODEL_DIR
    from spelltune.training.collators import PadCollator, encode_example
    from spelltune.training.trainer import AnswerLossTrainer

    batch = args.batch_size or params.train.batch_size
    set_seed(params.train.seed)
    torch.cuda.reset_peak_memory_stats()
    loaded = time.perf_counter()
    model, tokenizer = backend.load(params, choice, BASE_MODEL_DIR)
    load_seconds = time.perf_counter() - loaded
    items = read_jsonl(Path(args.data) / "train.jsonl")[: (args.warmup + args.steps) * batch]
    data = [encode_example(it, tokenizer, params.model.prompt_format) for it in items]

    clock = step_clock((args.warmup, args.warmup + args.steps), synchronize=torch.cuda.synchronize)
    training_args = TrainingArguments(
        output_dir=str(Path(args.scratch) / name), per_device_train_batch_size=batch,
        max_steps=args.warmup + args.steps, learning_rate=params.train.lr, warmup_steps=0,
        lr_scheduler_type="constant", seed=params.train.seed, data_seed=params.train.seed, logging_steps=10**6,
        save_strategy="no", report_to="none", include_num_input_tokens_seen="non_padding",
        dataloader_pin_memory=False, **backend.trainer_kwargs(choice),
    )
    trainer = AnswerLossTrainer(model=model, args=training_args, train_dataset=data,
                                data_collator=PadCollator(tokenizer.pad_token_id), callbacks=[clock])
    trainer.train()
    seconds, tokens = clock.between(args.warmup, args.warmup + args.steps)
    return {
        "backend": name,
        "reason": choice.reason,
        "dtype": choice.dtype,
        "load_in_4bit": params.model.load_in_4bit,
        "gradient_checkpointing": params.model.gradient_checkpointing,
        "gpu": torch.cuda.get_device_name(0),
        "batch_size": batch,
        "timed_steps": args.steps,
        "tokens_per_second": tokens / seconds,
        "seconds_per_step": seconds / args.steps,
        "peak_gpu_memory_mb": torch.cuda.max_memory_allocated() / 2**20,
        "load_seconds": load_seconds,
        "trainable_parameters": model.get_nb_trainable_parameters()[0],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spelltune.bench.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per backend")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (kernels, allocator)")
    parser.add_argument("--batch-size", type=int, default=0, help="0: train.batch_size of params.yaml")
    parser.add_argument("--data", default="data", help="directory with train.jsonl")
    parser.add_argument("--scratch", default="bench/gpu_scratch", help="Trainer output_dir (nothing is saved)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: unsloth,hf")
    parser.add_argument("--one", choices=BACKENDS, help=argparse.SUPPRESS)  # internal: one backend, JSON to stdout
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    import torch

    if not torch.cuda.is_available():
        return error("spelltune.bench.gpu needs a CUDA GPU (none found); nothing was measured")
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return 0

    results = []
    passthrough = [f"--steps={args.steps}", f"--warmup={args.warmup}", f"--batch-size={args.batch_size}",
                   f"--data={args.data}", f"--scratch={args.scratch}"]
    for name in args.backends.split(","):
        log.info("measuring %s", name)
        done = subprocess.run([sys.executable, "-m", "spelltune.bench.gpu", "--one", name, *passthrough],
                              stdout=subprocess.PIPE, text=True, check=False)
        lines = done.stdout.strip().splitlines()
        try:
            results.append(json.loads(lines[-1]))
        except (IndexError, json.JSONDecodeError):
            results.append({"backend": name, "error": f"exit status {done.returncode}; see the log above"})
        log.info("%s: %s", name, results[-1])
    measured = {r["backend"]: r for r in results if "tokens_per_second" in r}
    summary = {"command": " ".join(["python -m spelltune.bench.gpu", *(argv if argv is not None else sys.argv[1:])]),
               "results": results}
    if {"unsloth", "hf"} <= measured.keys():
        summary["unsloth_speedup"] = measured["unsloth"]["tokens_per_second"] / measured["hf"]["tokens_per_second"]
        summary["unsloth_memory_ratio"] = (
            measured["unsloth"]["peak_gpu_memory_mb"] / measured["hf"]["peak_gpu_memory_mb"]
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if measured else 1


if __name__ == "__main__":
    raise SystemExit(main())
