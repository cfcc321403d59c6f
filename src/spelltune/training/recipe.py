"""The train stage's recipe (TrainRecipe: setup, train, save) and what it is made of: the
resume point, the trackers, the trainer with its TrainingArguments and callbacks, the
exported outputs and summaries. Heavy imports (transformers) happen inside the functions:
the DDP launcher stays light."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from spelltune import handoff
from spelltune.paths import ADAPTER_DIR, BASE_MODEL_DIR, CHECKPOINT_DIR, LIVE_DIR, SUMMARY_FILE, TRAIN_METRICS_FILE
from spelltune.training import checkpoints
from spelltune.training.devices import original_repo_root

log = logging.getLogger("spelltune.training.recipe")


def main_process() -> bool:
    """DDP: every process trains, process 0 writes."""
    return int(os.environ.get("RANK", "0")) == 0


def launch_torchrun(params) -> int:
    """One data-parallel run: torchrun starts `train.processes` copies of the train stage.
    This launcher holds the run's resume store for them; the exit code of torchrun."""
    from spelltune.params import training_fingerprint

    processes = params.train.processes
    log.info("train.processes = %d: starting a DDP run under torchrun", processes)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
           "-m", "spelltune.stages.train"]
    store = checkpoints.claim_store(original_repo_root(), training_fingerprint(params))
    return subprocess.call(cmd, env={**os.environ, handoff.RESUME_STORE: str(store)})


@dataclass
class ResumePoint:
    store: Path  # this run's resume store (.spelltune/resume/<fingerprint>/)
    checkpoint: Path | None  # the checkpoint to resume from, or None: a fresh start
    state: dict  # what that checkpoint's manifest recorded beyond HF's state


def resume_point(fingerprint: str) -> ResumePoint:
    """Claim the store of these params and find where to start. A fresh start clears it;
    a resumed one brings back the DVCLive curves up to its checkpoint."""
    # Locked for this process's life: another live run of this fingerprint gets its own.
    # (A DDP process gets the store its launcher claimed, through the environment.)
    if main_process() or os.environ.get(handoff.RESUME_STORE):
        store = checkpoints.claim_store(original_repo_root(), fingerprint)
    else:
        store = checkpoints.resume_store(original_repo_root(), fingerprint)
    checkpoint = checkpoints.resumable(store, fingerprint)
    state = checkpoints.manifest(checkpoint)["state"] if checkpoint else {}
    if main_process() and checkpoint:
        log.info("resuming from %s", checkpoint)
        shutil.rmtree(LIVE_DIR, ignore_errors=True)  # the curves up to that checkpoint, no further
        shutil.copytree(checkpoint / "live", LIVE_DIR)
    elif main_process():
        others = sorted(p.name for p in store.parent.glob("*")
                        if p.name.split(".")[0] != fingerprint and checkpoints.checkpoints(p))
        log.info("starting fresh: no checkpoint of these params (fingerprint %s) in %s%s", fingerprint, store.parent,
                 f"; those of other params ({', '.join(others)}) are not resumed from" if others else "")
        checkpoints.clear(store)
    return ResumePoint(store, checkpoint, state)


def start_trackers(params, fingerprint: str, choice, resume: ResumePoint):
    """(DVCLive, W&B run) of this run; W&B starts in the background, beside the model's loading."""
    from dvclive import Live

    from spelltune.modeling.base import model_tag
    from spelltune.training.wandb_run import WandbRun, wandb_group

    live = Live(dir=str(LIVE_DIR), dvcyaml=None, save_dvc_exp=False, resume=resume.checkpoint is not None)
    wandb_run = WandbRun(
        name=os.environ.get("DVC_EXP_NAME", "workspace"),
        config={**params.model_dump(), "params_fingerprint": fingerprint},
        tags=[model_tag(params.model.source), "spelling", f"{choice.name}-{choice.device}",
              f"params-{fingerprint}"],
        group=wandb_group(),
        run_id=resume.state.get("wandb_run_id"),
    )
    return live, wandb_run


def training_arguments(tp, store: Path, choice, packing: bool, evaluates: bool):
    """train.* as HF TrainingArguments; `evaluates`: a validation loss set exists."""
    from transformers import TrainingArguments

    from spelltune.modeling.backends import trainer_kwargs
    from spelltune.params import EARLY_STOP_METRICS

    return TrainingArguments(
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
        eval_strategy="steps" if evaluates else "no",
        eval_steps=tp.eval_every,
        prediction_loss_only=True,
        save_strategy="steps",
        save_steps=tp.save_every,
        metric_for_best_model=tp.early_stop_metric.removeprefix("val/") if evaluates else None,
        greater_is_better=EARLY_STOP_METRICS[tp.early_stop_metric] == "max",
        load_best_model_at_end=bool(tp.early_stop_patience),
        restore_callback_states_from_checkpoint=True,
        report_to="none",
        **trainer_kwargs(choice),  # CPU: use_cpu=True, fp32; GPU: mixed precision
        include_num_input_tokens_seen="all" if packing else "non_padding",  # packed rows have no padding
        dataloader_pin_memory=False,
        train_sampling_strategy="group_by_length" if tp.group_by_length else "random",
    )


def answer_scorer(tokenizer, items: list[dict], prompt_format: str, batch_size: int, letter_answer: str = "direct"):
    """model -> val accuracies from greedy answers to `items` (None when there are none)."""
    if not items:
        return None
    from spelltune.modeling.generation import generate_replies
    from spelltune.task.scoring import score_item, summarize

    def answer_metrics(model) -> dict[str, float]:
        replies = generate_replies(model, tokenizer, items, prompt_format, batch_size, letter_answer=letter_answer)
        scores = summarize([{**it, **score_item(it, r)} for it, r in zip(items, replies)])
        return {k: scores[k] for k in ("letter_position_accuracy", "spelling_exact_match") if scores[k] is not None}

    return answer_metrics


def make_callbacks(tp, trackers, resume: ResumePoint) -> tuple[list, object, object]:
    """(callbacks, metrics callback or None, prune callback or None)."""
    from transformers import EarlyStoppingCallback

    from spelltune.training.pruning import reporter_from_env
    from spelltune.training.tracking import MetricsCallback, PruneCallback

    found, metrics, prune = [], None, None
    if trackers is not None:
        live, wandb_run = trackers
        metrics = MetricsCallback(live, tp.max_steps, tp.early_stop_metric, wandb_run, resume.state.get("metrics"))
        found.append(metrics)
    if tp.early_stop_patience:
        found.append(EarlyStoppingCallback(tp.early_stop_patience, tp.early_stop_min_delta))
    # Set when this run is a sweep trial. Not in a DDP run: one process stopping alone
    # would leave the others waiting for it.
    reporter = reporter_from_env() if tp.processes == 1 else None
    if reporter is not None:
        prune = PruneCallback(reporter)
        found.append(prune)
    return found, metrics, prune


def stop_reason(trainer, tp, prune) -> str:
    from transformers import EarlyStoppingCallback

    # (On resume HF replaces the callback by one rebuilt from the checkpoint: look it up.)
    stopper = next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, EarlyStoppingCallback)), None)
    if stopper is not None and stopper.early_stopping_patience_counter >= tp.early_stop_patience:
        return "early_stopping"
    if prune is not None and prune.pruned:
        return "pruned"
    return "max_steps"


def export_checkpoints(trainer, store: Path, checkpoint_dir: Path) -> None:
    """The final and best checkpoints become this experiment's versioned output."""
    step = trainer.state.global_step
    checkpoints.clear(checkpoint_dir)
    for kept in {step, trainer.state.best_global_step or step}:
        checkpoints.export(store / f"checkpoint-{kept}", checkpoint_dir)


def final_losses_and_minutes(summary: dict) -> dict:
    """The final losses and training minutes (metrics/train.json, which `spelltune compare` reads)."""
    final = summary["final"]
    return {
        "train/loss": final.get("train/loss"),
        "val/loss": final.get("val/loss"),
        "train_minutes": summary["wallclock_seconds"] / 60,
    }


def use_packing(tp, choice, model) -> bool:
    """Packed rows rely on transformers building a block-diagonal mask from position ids;
    Unsloth's patched attention is not known to, so it trains on padded batches."""
    packing = tp.packing and choice.name == "hf"
    if tp.packing and not packing:
        log.info("train.packing: off on the %s backend (padded batches)", choice.name)
    if packing:
        from spelltune.modeling.attention import use_packed_attention

        use_packed_attention(model)
    return packing


class TrainRecipe:
    """One run of the train stage, as torchtune's single-device recipes are cut: setup()
    (the resume point, the trackers, the model, the trainer), train(), save() (checkpoints/,
    the adapter with its model card, the summaries). The order of setup() is the run's: W&B
    starts beside the model's loading, the seed is set just before it."""

    def __init__(self, params, worker, choice):
        from spelltune.params import training_fingerprint

        self.params, self.worker, self.choice = params, worker, choice
        self.fingerprint = training_fingerprint(params)
        self.main = main_process()

    def setup(self, data: dict) -> None:
        """data: the train and validation items."""
        from transformers import set_seed

        from spelltune.modeling import backends
        from spelltune.modeling.base import set_threads

        params = self.params
        self.resume = resume_point(self.fingerprint)
        self.trackers = start_trackers(params, self.fingerprint, self.choice, self.resume) if self.main else None
        threads = set_threads(self.worker.threads)
        set_seed(params.train.seed)
        model, tokenizer = backends.load(params, self.choice, BASE_MODEL_DIR)
        trainable, total = model.get_nb_trainable_parameters()
        self.sizes = {"total": total, "trainable": trainable}
        log.info("LoRA: %d trainable of %d parameters; %d threads", trainable, total, threads)
        packing = use_packing(params.train, self.choice, model)
        self.trainer, self.metrics, self.prune = self._trainer(model, tokenizer, data, packing)

    def train(self) -> None:
        resume = self.resume.checkpoint
        self.trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        if self.main:
            self.trackers[0].end()

    def _trainer(self, model, tokenizer, data: dict, packing: bool):
        """(AnswerLossTrainer, its metrics callback, its prune callback) for this run."""
        from spelltune.training.collators import EncodedItems, collator
        from spelltune.training.trainer import AnswerLossTrainer

        params, resume, trackers = self.params, self.resume, self.trackers
        tp, prompt_format, letter_answer = params.train, params.model.prompt_format, params.data.letter_answer
        args = training_arguments(tp, resume.store, self.choice, packing, evaluates=bool(tp.val_loss_items))
        callbacks, metrics, prune = make_callbacks(tp, trackers, resume)
        validation = data["validation"]
        val_loss_set = None
        if tp.val_loss_items:
            val_loss_set = EncodedItems(validation[: tp.val_loss_items], tokenizer, prompt_format, letter_answer)
        trainer = AnswerLossTrainer(
            model=model,
            args=args,
            train_dataset=EncodedItems(data["train"], tokenizer, prompt_format, letter_answer),
            eval_dataset=val_loss_set,
            data_collator=collator(packing, tokenizer.pad_token_id),
            callbacks=callbacks,
            answer_metrics=answer_scorer(tokenizer, validation[: tp.val_generate_items], prompt_format,
                                         args.per_device_eval_batch_size, letter_answer),
            grad_norm_limit=tp.grad_norm_limit,
            fingerprint=self.fingerprint,
            keep_last=tp.keep_last,
            live_dir=LIVE_DIR,
            # What a resumed run needs beyond HF's state; process 0 writes checkpoints.
            run_state=(lambda: {"metrics": metrics.state(), "wandb_run_id": trackers[1].id}) if trackers else dict,
        )
        return trainer, metrics, prune

    def save(self) -> dict:
        """checkpoints/ (final and best), the adapter with its model card, the summaries; the
        run's summary."""
        from spelltune.files import write_json
        from spelltune.modeling import card, card_markdown
        from spelltune.modeling.lora import save_adapter
        from spelltune.training.wandb_eval import record_run_id
        from spelltune.training.wandb_run import flat_summary

        params, trainer, resume, metrics = self.params, self.trainer, self.resume, self.metrics
        step = trainer.state.global_step
        export_checkpoints(trainer, resume.store, CHECKPOINT_DIR)
        save_adapter(trainer.model, ADAPTER_DIR, card.base_model_name(params.model.source))
        reason = stop_reason(trainer, params.train, self.prune)
        summary = metrics.summary(
            early_stop_reason=reason,
            stopped_at_step=step,
            resumed_from_step=checkpoints.step_of(resume.checkpoint) if resume.checkpoint else None,
            tokens_seen=trainer.state.num_input_tokens_seen,
            parameters=self.sizes,
            params_fingerprint=trainer.fingerprint,
            backend=self.choice.as_dict(),
            worker=self.worker.as_dict(),
        )
        write_json(summary, SUMMARY_FILE)
        write_json(final_losses_and_minutes(summary), TRAIN_METRICS_FILE)
        # The model card with the training facts (evaluate's metrics: `spelltune card`).
        (ADAPTER_DIR / card.CARD_FILE).write_text(card_markdown.render(card.training_facts(params, summary)))
        metrics.wandb_run.finish(flat_summary(summary))
        record_run_id(trainer.fingerprint, metrics.wandb_run.id)  # where evaluate adds the final scores
        shutil.rmtree(resume.store)  # finished: nothing left to resume
        log.info("%s after %d steps; adapter saved to %s", reason, step, ADAPTER_DIR)
        return summary
