"""Stage `train`: LoRA fine-tuning of the base model with HF Trainer + PEFT (CPU: fp32).

Reads data/{train,validation}.jsonl and data/base_model/, writes the adapter to
checkpoints/adapter/ and the training curves through DVCLive to metrics/train/.
The loss is computed on answer tokens only.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from spelltune.params import load_or_exit
from spelltune.paths import ADAPTER_DIR, CHECKPOINT_DIR, METRICS_DIR

log = logging.getLogger("spelltune.train")

LIVE_DIR = METRICS_DIR / "train"
SUMMARY_FILE = METRICS_DIR / "summary.json"
IGNORE_INDEX = -100  # label value that carries no loss


def encode_example(item: dict, tokenizer, prompt_format: str) -> dict:
    """Token ids of prompt + answer; labels mask the prompt so only the answer is learned."""
    from spelltune.model import end_of_answer, render_prompt

    prompt = tokenizer(render_prompt(item["question"], prompt_format, tokenizer), add_special_tokens=False)["input_ids"]
    answer = tokenizer(item["answer"] + end_of_answer(tokenizer), add_special_tokens=False)["input_ids"]
    return {"input_ids": prompt + answer, "labels": [IGNORE_INDEX] * len(prompt) + answer}


class PadCollator:
    """Right-pads a batch to its longest example; padded labels carry no loss."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        width = max(len(ex["input_ids"]) for ex in batch)
        ids, labels, mask = [], [], []
        for ex in batch:
            pad = width - len(ex["input_ids"])
            ids.append(ex["input_ids"] + [self.pad_id] * pad)
            labels.append(ex["labels"] + [IGNORE_INDEX] * pad)
            mask.append([1] * len(ex["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }


def answer_loss_trainer():
    """HF Trainer whose loss runs the 49k-wide output layer only at positions whose next
    token is an answer token: at every position it is ~20 % of the forward pass, and the
    prompt positions carry no loss anyway."""
    import torch
    import torch.nn.functional as F
    from transformers import Trainer

    class AnswerLossTrainer(Trainer):
        loss_is_scaled_for_ga = True  # we divide by the answer tokens of the whole accumulated batch

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # The LoRA-injected *ForCausalLM: its decoder, then the output layer where it pays.
            causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
            hidden = causal_lm.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])[0]
            targets = inputs["labels"][:, 1:]  # position t predicts token t + 1
            answer = targets != IGNORE_INDEX
            logits = causal_lm.lm_head(hidden[:, :-1][answer])
            loss = F.cross_entropy(logits.float(), targets[answer], reduction="sum")
            n_answer_tokens = num_items_in_batch if num_items_in_batch is not None else answer.sum()
            loss = loss / torch.as_tensor(n_answer_tokens, device=loss.device)
            return (loss, {"loss": loss}) if return_outputs else loss

    return AnswerLossTrainer


def build_lora_model(model, lora):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def save_adapter(model, out_dir: Path) -> None:
    """Save the LoRA adapter as safetensors. PEFT keeps target_modules as a set, so its
    order in adapter_config.json follows Python's hash seed: sort it so that the same
    training gives byte-identical files (and the same DVC hash) in every process."""
    model.save_pretrained(out_dir, safe_serialization=True)
    config_file = out_dir / "adapter_config.json"
    config = json.loads(config_file.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))


def main() -> None:
    params = load_or_exit()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    from datasets import Dataset
    from dvclive import Live
    from transformers import TrainingArguments, set_seed

    from spelltune.data import read_jsonl, write_json
    from spelltune.generation import generate_replies
    from spelltune.model import load_base_model, model_tag, set_threads
    from spelltune.params import training_fingerprint
    from spelltune.tracking import MetricsCallback, WandbRun, flat_summary

    tp = params.train
    threads = set_threads(tp.threads)
    set_seed(tp.seed)
    model, tokenizer = load_base_model()
    model = build_lora_model(model, params.lora)
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA: %d trainable of %d parameters; %d threads", trainable, total, threads)

    def encoded(split: str, limit: int | None = None) -> Dataset:
        items = read_jsonl(f"data/{split}.jsonl")[:limit]
        return Dataset.from_list([encode_example(it, tokenizer, params.model.prompt_format) for it in items])

    train_set = encoded("train")
    val_set = encoded("validation", tp.val_loss_items) if tp.val_loss_items else None

    args = TrainingArguments(
        output_dir=str(CHECKPOINT_DIR),
        per_device_train_batch_size=tp.batch_size,
        per_device_eval_batch_size=max(tp.batch_size, 32),
        gradient_accumulation_steps=tp.grad_accum_steps,
        max_steps=tp.max_steps,
        learning_rate=tp.lr,
        warmup_steps=tp.warmup_steps,
        lr_scheduler_type=tp.lr_scheduler,
        weight_decay=tp.weight_decay,
        seed=tp.seed,
        data_seed=tp.seed,
        logging_steps=tp.log_every,
        eval_strategy="steps" if val_set is not None else "no",
        eval_steps=tp.eval_every,
        prediction_loss_only=True,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_pin_memory=False,
        train_sampling_strategy="group_by_length" if tp.group_by_length else "random",
    )
    live = Live(dir=str(LIVE_DIR), dvcyaml=None, save_dvc_exp=False)
    fingerprint = training_fingerprint(params)
    wandb_run = WandbRun(
        name=os.environ.get("DVC_EXP_NAME", "workspace"),
        config={**params.model_dump(), "params_fingerprint": fingerprint},
        tags=[model_tag(params.model.source), "spelling", "hf-cpu"],
        group=os.environ.get("WANDB_RUN_GROUP"),
    )
    metrics = MetricsCallback(
        live,
        max_steps=tp.max_steps,
        val_items=read_jsonl("data/validation.jsonl")[: tp.val_generate_items],
        answer=lambda m, items: generate_replies(
            m, tokenizer, items, params.model.prompt_format, args.per_device_eval_batch_size
        ),
        wandb_run=wandb_run,
    )
    trainer = answer_loss_trainer()(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=PadCollator(tokenizer.pad_token_id),
        callbacks=[metrics],
    )
    start = time.perf_counter()
    trainer.train()
    live.end()
    save_adapter(model, ADAPTER_DIR)
    summary = metrics.summary(
        early_stop_reason="max_steps",
        tokens_seen=trainer.state.num_input_tokens_seen,
        parameters={"total": total, "trainable": trainable},
        params_fingerprint=fingerprint,
    )
    write_json(summary, SUMMARY_FILE)
    wandb_run.finish(flat_summary(summary))
    log.info("trained %d steps in %.1f s; adapter saved to %s", tp.max_steps, time.perf_counter() - start, ADAPTER_DIR)


if __name__ == "__main__":
    main()
