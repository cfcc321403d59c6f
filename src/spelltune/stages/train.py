"""Stage `train`: LoRA fine-tuning of the base model with HF Trainer + PEFT or Unsloth (spelltune.backend).

Reads data/{train,validation}.jsonl and data/base_model/, writes the adapter to
checkpoints/adapter/ and the training curves through DVCLive to metrics/train/.
The loss is computed on answer tokens only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from spelltune.params import load_pinned_or_exit
from spelltune.paths import ADAPTER_DIR, CHECKPOINT_DIR, METRICS_DIR, SUMMARY_FILE, TRAIN_METRICS_FILE
from spelltune.startup import loaded, pause_collector

log = logging.getLogger("spelltune.train")

LIVE_DIR = METRICS_DIR / "train"
IGNORE_INDEX = -100  # label value that carries no loss


def encode_example(item: dict, tokenizer, prompt_format: str) -> dict:
    """Token ids of prompt + answer; labels mask the prompt so only the answer is learned."""
    from spelltune.model import end_of_answer, render_prompt

    prompt = tokenizer(render_prompt(item["question"], prompt_format, tokenizer), add_special_tokens=False)["input_ids"]
    answer = tokenizer(item["answer"] + end_of_answer(tokenizer), add_special_tokens=False)["input_ids"]
    return {"input_ids": prompt + answer, "labels": [IGNORE_INDEX] * len(prompt) + answer}


class EncodedItems:
    """A split's items, tokenized as the data loader asks for them: the first step does not
    wait for the whole split (0.4 s for 7,200 items), and a run of 130 steps × 16 reads
    2,080 of them."""

    def __init__(self, items: list[dict], tokenizer, prompt_format: str):
        self.items, self.tokenizer, self.prompt_format = items, tokenizer, prompt_format

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return encode_example(self.items[index], self.tokenizer, self.prompt_format)


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


class PackCollator:
    """Packs a batch into one row without padding: position ids restart at every example,
    and with no attention mask transformers masks attention block-diagonally from them
    (masking_utils.find_packed_sequence_indices), so no example sees another. The same
    examples per step as PadCollator, the same answer tokens in the loss."""

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        return {
            "input_ids": torch.tensor([[t for ex in batch for t in ex["input_ids"]]]),
            "labels": torch.tensor([[t for ex in batch for t in ex["labels"]]]),
            "position_ids": torch.tensor([[i for ex in batch for i in range(len(ex["input_ids"]))]]),
        }


def collator(packing: bool, pad_id: int):
    return PackCollator() if packing else PadCollator(pad_id)


class TrainingDiverged(RuntimeError):
    """A NaN/inf loss or gradient, or a gradient norm beyond train.grad_norm_limit."""


def answer_loss_trainer():
    """HF Trainer with our loss, guards, validation answers and atomic checkpoints.

    The loss runs the 49k-wide output layer only at positions whose next token is an answer
    token: at every position it is ~20 % of the forward pass, and the prompt positions
    carry no loss anyway."""
    import math

    import torch
    import torch.nn.functional as F
    from transformers import Trainer
    from transformers.trainer_callback import ExportableState

    from spelltune import checkpoints

    class AnswerLossTrainer(Trainer):
        loss_is_scaled_for_ga = True  # we divide by the answer tokens of the whole accumulated batch
        answer_metrics = None  # model -> {letter_position_accuracy, ...} from greedy answers
        grad_norm_limit = math.inf
        fingerprint = ""
        keep_last = 2
        live_dir: Path | None = None  # the DVCLive curves so far go into each checkpoint
        run_state = staticmethod(dict)  # () -> what a resumed run needs beyond HF's state

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            targets = inputs["labels"][:, 1:]  # position t predicts token t + 1
            answer = targets != IGNORE_INDEX
            batch = {"input_ids": inputs["input_ids"], "attention_mask": inputs.get("attention_mask"),
                     "position_ids": inputs.get("position_ids"), "use_cache": False}
            ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
            if ddp:
                # DDP syncs gradients only through its own forward: the whole model, with the
                # output layer at the answer positions only (logits_to_keep takes indices).
                keep = answer.any(0).nonzero().squeeze(1)
                logits = model(**batch, logits_to_keep=keep).logits[answer[:, keep]]
                answer_targets = targets[:, keep][answer[:, keep]]
            else:
                # The LoRA-injected *ForCausalLM: its decoder, then the output layer where it pays.
                causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
                hidden = causal_lm.model(**batch)[0]
                logits = causal_lm.lm_head(hidden[:, :-1][answer])
                answer_targets = targets[answer]
            loss = F.cross_entropy(logits.float(), answer_targets, reduction="sum")
            n_answer_tokens = num_items_in_batch if num_items_in_batch is not None else answer.sum()
            loss = loss / torch.as_tensor(n_answer_tokens, device=loss.device)
            if ddp and num_items_in_batch is not None:
                # num_items_in_batch counts every process's answer tokens, and DDP averages
                # the processes' gradients: undo that mean (as HF's own compute_loss does).
                loss = loss * torch.distributed.get_world_size()
            return (loss, {"loss": loss}) if return_outputs else loss

        def training_step(self, *args, **kwargs):
            loss = super().training_step(*args, **kwargs)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"step {self.state.global_step + 1}: the loss is {loss.item()}")
            return loss

        def _get_grad_norm(self, model, grad_norm=None):
            # The pre-clipping norm, before the optimizer applies the update.
            norm = super()._get_grad_norm(model, grad_norm=grad_norm)
            if norm is not None and not (math.isfinite(norm) and norm <= self.grad_norm_limit):
                raise TrainingDiverged(
                    f"step {self.state.global_step + 1}: the gradient norm is {norm:.4g} "
                    f"(train.grad_norm_limit = {self.grad_norm_limit:g})"
                )
            return norm

        def evaluation_loop(self, *args, **kwargs):
            # Accuracy from greedy answers joins the eval metrics, so that the best
            # checkpoint and early stopping can follow it like the loss.
            output = super().evaluation_loop(*args, **kwargs)
            if self.answer_metrics is not None:
                prefix = kwargs.get("metric_key_prefix", "eval")
                output.metrics.update({f"{prefix}_{k}": v for k, v in self.answer_metrics(self.model).items()})
            return output

        def _determine_best_metric(self, metrics, trial):
            # HF marks a new best at any evaluation; save there too (not only every
            # save_every steps), so that the best step always has a checkpoint to restore.
            new_best = super()._determine_best_metric(metrics=metrics, trial=trial)
            if new_best:
                self.control.should_save = True
            return new_best

        def _save_checkpoint(self, model, trial):
            """HF's checkpoint content, staged and renamed into place with a manifest. In a
            DDP run every process adds its RNG state; process 0 writes the rest and commits."""
            root = Path(self.args.output_dir)
            staging = checkpoints.staging_dir(root, self.state.global_step)
            main = self.args.should_save
            if main:
                shutil.rmtree(staging, ignore_errors=True)
            self.accelerator.wait_for_everyone()
            self.save_model(str(staging), _internal_call=True)  # HF: process 0 only
            self._save_optimizer_and_scheduler(str(staging))
            self._save_scaler(str(staging))
            self._save_rng_state(str(staging))
            self.accelerator.wait_for_everyone()
            best = None
            if self.state.best_global_step:
                best = root / f"checkpoint-{self.state.best_global_step}"
                self.state.best_model_checkpoint = str(best)
            if main:
                for cb in self.callback_handler.callbacks + [self.control]:
                    if isinstance(cb, ExportableState):
                        self.state.stateful_callbacks[cb.__class__.__name__] = cb.state()
                self.state.save_to_json(str(staging / "trainer_state.json"))
                if self.live_dir is not None and self.live_dir.exists():
                    shutil.copytree(self.live_dir, staging / "live")
                checkpoints.commit(staging, self.fingerprint, self.run_state())
                checkpoints.rotate(root, self.keep_last, best)
            self.accelerator.wait_for_everyone()

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


def save_adapter(model, out_dir: Path, base_model: str | None = None) -> None:
    """Save the LoRA adapter as safetensors, staged and renamed into place. PEFT keeps
    target_modules as a set, so its order in adapter_config.json follows Python's hash
    seed: sort it so that the same training gives byte-identical files (and DVC hash).
    base_model (spelltune.card.base_model_name) replaces the local data/base_model path
    PEFT records, so that the adapter loads elsewhere (spelltune.use maps it back here)."""
    staging = out_dir.with_name(f".staging-{out_dir.name}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    config_file = staging / "adapter_config.json"
    config = json.loads(config_file.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    if base_model:
        config["base_model_name_or_path"] = base_model
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(staging, out_dir)


def train_headline(summary: dict) -> dict:
    """The few training numbers worth a column in `dvc exp show`."""
    final = summary["final"]
    return {
        "train/loss": final.get("train/loss"),
        "val/loss": final.get("val/loss"),
        "train_minutes": summary["wallclock_seconds"] / 60,
    }


def main() -> None:
    pause_collector()
    params, pin = load_pinned_or_exit("train")  # pin: outputs are recorded only if params.yaml still holds these
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    # Before anything loads: this worker's slot (its GPU, its share of the cores), then the
    # backend for this machine (spelltune.devices, spelltune.backend).
    from spelltune.backend import check_or_exit
    from spelltune.devices import claim_worker

    processes = params.train.processes
    if processes > 1 and "LOCAL_RANK" not in os.environ:
        # One data-parallel run: torchrun starts `processes` copies of this stage (DDP).
        check_or_exit(params, import_unsloth=False)  # a bad backend for DDP says so before anything starts
        log.info("train.processes = %d: starting a DDP run under torchrun", processes)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "spelltune.train"]
        # This launcher holds the run's resume store for the processes torchrun starts.
        from spelltune.checkpoints import STORE_ENV, claim_store
        from spelltune.devices import original_repo_root
        from spelltune.params import training_fingerprint

        store = claim_store(original_repo_root(), training_fingerprint(params))
        code = subprocess.call(cmd, env={**os.environ, STORE_ENV: str(store)})
        if code == 0:
            pin.check_or_exit()
        raise SystemExit(code)
    worker = claim_worker(params.train.threads)
    choice = check_or_exit(params)
    from spelltune.data import DataFileError

    try:
        train(params, worker, choice, pin)
    except TrainingDiverged as exc:
        log.error("training stopped at %s; the last good checkpoint is kept for a rerun to resume from", exc)
        raise SystemExit(1) from None
    except DataFileError as exc:  # before anything was removed: see train()
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    pin.check_or_exit()  # again at the exit, after which DVC records the params


def train(params, worker=None, choice=None, pin=None) -> dict:
    """worker (spelltune.devices) and choice (spelltune.backend) default to this process's
    slot and this machine's backend, decided here before torch touches CUDA. pin
    (spelltune.params.ParamsPin): checked before the final outputs are written."""
    from spelltune.data import read_jsonl

    # The inputs parse before anything of an earlier run (curves, checkpoints) is removed.
    data = {split: read_jsonl(f"data/{split}.jsonl") for split in ("train", "validation")}
    from spelltune import backend
    from spelltune.devices import claim_worker

    worker = worker or claim_worker(params.train.threads)
    choice = choice or backend.check_or_exit(params)

    from dvclive import Live
    from transformers import EarlyStoppingCallback, TrainingArguments, set_seed

    from spelltune import card, checkpoints
    from spelltune.data import write_json
    from spelltune.generation import generate_replies
    from spelltune.metrics import score_item, summarize
    from spelltune.model import model_tag, set_threads
    from spelltune.params import EARLY_STOP_METRICS, training_fingerprint
    from spelltune.paths import BASE_MODEL_DIR
    from spelltune.tracking import (
        MetricsCallback, PruneCallback, WandbRun, flat_summary, original_repo_root, sweep_reporter, wandb_group,
    )

    tp = params.train
    main_process = int(os.environ.get("RANK", "0")) == 0  # DDP: every process trains, process 0 writes
    fingerprint = training_fingerprint(params)
    # Locked for this process's life: another live run of this fingerprint gets its own.
    # (A DDP process gets the store its launcher claimed, through the environment.)
    if main_process or os.environ.get(checkpoints.STORE_ENV):
        store = checkpoints.claim_store(original_repo_root(), fingerprint)
    else:
        store = checkpoints.resume_store(original_repo_root(), fingerprint)
    resume_from = checkpoints.resumable(store, fingerprint)
    resumed = checkpoints.manifest(resume_from)["state"] if resume_from else {}
    if main_process and resume_from:
        log.info("resuming from %s", resume_from)
        shutil.rmtree(LIVE_DIR, ignore_errors=True)  # the curves up to that checkpoint, no further
        shutil.copytree(resume_from / "live", LIVE_DIR)
    elif main_process:
        others = sorted(p.name for p in store.parent.glob("*")
                        if p.name.split(".")[0] != fingerprint and checkpoints.checkpoints(p))
        log.info("starting fresh: no checkpoint of these params (fingerprint %s) in %s%s", fingerprint, store.parent,
                 f"; those of other params ({', '.join(others)}) are not resumed from" if others else "")
        checkpoints.clear(store)

    if main_process:  # the trackers start first: W&B's start runs beside the model's loading
        live = Live(dir=str(LIVE_DIR), dvcyaml=None, save_dvc_exp=False, resume=resume_from is not None)
        wandb_run = WandbRun(
            name=os.environ.get("DVC_EXP_NAME", "workspace"),
            config={**params.model_dump(), "params_fingerprint": fingerprint},
            tags=[model_tag(params.model.source), "spelling", f"{choice.name}-{choice.device}"],
            group=wandb_group(),
            run_id=resumed.get("wandb_run_id"),
        )
    threads = set_threads(worker.threads)
    set_seed(tp.seed)
    model, tokenizer = backend.load(params, choice, BASE_MODEL_DIR)
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA: %d trainable of %d parameters; %d threads", trainable, total, threads)

    def encoded(split: str, limit: int | None = None) -> EncodedItems:
        return EncodedItems(data[split][:limit], tokenizer, params.model.prompt_format)

    train_set = encoded("train")
    val_set = encoded("validation", tp.val_loss_items) if tp.val_loss_items else None
    val_items = data["validation"][: tp.val_generate_items]
    best_metric = tp.early_stop_metric.removeprefix("val/")

    # Packed rows rely on transformers building a block-diagonal mask from position ids;
    # Unsloth's patched attention is not known to, so it trains on padded batches.
    packing = tp.packing and choice.name == "hf"
    if tp.packing and not packing:
        log.info("train.packing: off on the %s backend (padded batches)", choice.name)
    if packing:
        from spelltune.attention import use_packed_attention

        use_packed_attention(model)
    args = TrainingArguments(
        output_dir=str(store),
        per_device_train_batch_size=tp.batch_size,
        per_device_eval_batch_size=max(tp.batch_size, 32),
        gradient_accumulation_steps=tp.grad_accum_steps,
        max_steps=tp.max_steps,
        learning_rate=tp.lr,
        warmup_steps=tp.warmup_steps,
        lr_scheduler_type=tp.lr_scheduler,
        weight_decay=tp.weight_decay,
        max_grad_norm=tp.max_grad_norm,
        seed=tp.seed,
        data_seed=tp.seed,
        logging_steps=tp.log_every,
        eval_strategy="steps" if val_set is not None else "no",
        eval_steps=tp.eval_every,
        prediction_loss_only=True,
        save_strategy="steps",
        save_steps=tp.save_every,
        metric_for_best_model=best_metric if val_set is not None else None,
        greater_is_better=EARLY_STOP_METRICS[tp.early_stop_metric] == "max",
        load_best_model_at_end=bool(tp.early_stop_patience),
        restore_callback_states_from_checkpoint=True,
        report_to="none",
        **backend.trainer_kwargs(choice),  # CPU: use_cpu=True, fp32; GPU: mixed precision
        include_num_input_tokens_seen="all" if packing else "non_padding",  # packed rows have no padding
        dataloader_pin_memory=False,
        train_sampling_strategy="group_by_length" if tp.group_by_length else "random",
    )
    callbacks = []
    if main_process:
        metrics = MetricsCallback(live, tp.max_steps, tp.early_stop_metric, wandb_run, resumed.get("metrics"))
        callbacks.append(metrics)
    if tp.early_stop_patience:
        callbacks.append(EarlyStoppingCallback(tp.early_stop_patience, tp.early_stop_min_delta))
    # Set when this run is a sweep trial (spelltune.trial.reporter_from_env). Not in a DDP run:
    # one process stopping alone would leave the others waiting for it.
    reporter = sweep_reporter() if tp.processes == 1 else None
    if reporter is not None:
        prune = PruneCallback(reporter)
        callbacks.append(prune)

    def answer_metrics(m) -> dict[str, float]:
        replies = generate_replies(m, tokenizer, val_items, params.model.prompt_format, args.per_device_eval_batch_size)
        scores = summarize([{**it, **score_item(it, r)} for it, r in zip(val_items, replies)])
        return {k: scores[k] for k in ("letter_position_accuracy", "spelling_exact_match") if scores[k] is not None}

    trainer = answer_loss_trainer()(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=collator(packing, tokenizer.pad_token_id),
        callbacks=callbacks,
    )
    trainer.answer_metrics = answer_metrics if val_items else None
    trainer.grad_norm_limit = tp.grad_norm_limit
    trainer.fingerprint = fingerprint
    trainer.keep_last = tp.keep_last
    trainer.live_dir = LIVE_DIR
    if main_process:  # what a resumed run needs beyond HF's state; process 0 writes checkpoints
        trainer.run_state = lambda: {"metrics": metrics.state(), "wandb_run_id": wandb_run.id}

    loaded()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if main_process:
        live.end()
    step = trainer.state.global_step
    saved = checkpoints.checkpoints(store)
    if not saved or checkpoints.step_of(saved[0]) != step:  # stopped between saves (pruned)
        trainer._save_checkpoint(model, None)
    if not main_process:
        return {}
    if pin is not None:  # params.yaml changed under this run: write no outputs for DVC to record
        pin.check_or_exit()
    # The final and best checkpoints become this experiment's versioned output.
    checkpoints.clear(CHECKPOINT_DIR)
    for kept in {step, trainer.state.best_global_step or step}:
        checkpoints.export(store / f"checkpoint-{kept}", CHECKPOINT_DIR)
    save_adapter(model, ADAPTER_DIR, card.base_model_name(params.model.source))
    # (On resume HF replaces the callback by one rebuilt from the checkpoint: look it up.)
    stopper = next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, EarlyStoppingCallback)), None)
    if stopper is not None and stopper.early_stopping_patience_counter >= tp.early_stop_patience:
        stop_reason = "early_stopping"
    elif reporter is not None and prune.pruned:
        stop_reason = "pruned"
    else:
        stop_reason = "max_steps"
    summary = metrics.summary(
        early_stop_reason=stop_reason,
        stopped_at_step=step,
        resumed_from_step=checkpoints.step_of(resume_from) if resume_from else None,
        tokens_seen=trainer.state.num_input_tokens_seen,
        parameters={"total": total, "trainable": trainable},
        params_fingerprint=fingerprint,
        backend=choice.as_dict(),
        worker=worker.as_dict(),
    )
    write_json(summary, SUMMARY_FILE)
    write_json(train_headline(summary), TRAIN_METRICS_FILE)
    # The model card with the training facts (evaluate's metrics: `spelltune card`, spelltune.card).
    (ADAPTER_DIR / card.CARD_FILE).write_text(card.render(card.training_facts(params, summary)))
    wandb_run.finish(flat_summary(summary))
    shutil.rmtree(store)  # finished: nothing left to resume
    log.info("%s after %d steps; adapter saved to %s", stop_reason, step, ADAPTER_DIR)
    return summary


if __name__ == "__main__":
    main()
