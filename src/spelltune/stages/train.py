"""Stage `train`: LoRA fine-tuning of the base model with HF Trainer + PEFT or Unsloth
(spelltune.modeling.backends), the loss on answer tokens only.

    python -m spelltune.stages.train

Reads data/{train,validation}.jsonl and data/base_model/, writes the adapter to
checkpoints/adapter/ and the training curves through DVCLive to metrics/train/.
The recipe: set up (resume point, trackers, model, trainer), train, export, summarise.
"""

from __future__ import annotations

import logging
import os
import shutil

from spelltune.errors import fail
from spelltune.params import load_pinned_or_exit
from spelltune.paths import ADAPTER_DIR, BASE_MODEL_DIR, CHECKPOINT_DIR, LIVE_DIR, SUMMARY_FILE, TRAIN_METRICS_FILE
from spelltune.training.startup import loaded, pause_collector

log = logging.getLogger("spelltune.stages.train")


def main() -> None:
    pause_collector()
    params, pin = load_pinned_or_exit("train")  # pin: outputs are recorded only if params.yaml still holds these
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    # Before anything loads: this worker's slot (its GPU, its share of the cores), then the backend.
    from spelltune.modeling.backends import check_or_exit
    from spelltune.training.devices import claim_worker

    if params.train.processes > 1 and "LOCAL_RANK" not in os.environ:
        check_or_exit(params, import_unsloth=False)  # a bad backend for DDP says so before anything starts
        from spelltune.training.recipe import launch_torchrun

        code = launch_torchrun(params)
        if code == 0:
            pin.check_or_exit()
        raise SystemExit(code)
    worker = claim_worker(params.train.threads)
    choice = check_or_exit(params)
    from spelltune.files import DataFileError
    from spelltune.training.trainer import TrainingDiverged

    try:
        train(params, worker, choice, pin)
    except TrainingDiverged as exc:
        log.error("training stopped at %s; the last good checkpoint is kept for a rerun to resume from", exc)
        raise SystemExit(1) from None
    except DataFileError as exc:  # before anything was removed: see train()
        fail(str(exc))
    pin.check_or_exit()  # again at the exit, after which DVC records the params


def train(params, worker=None, choice=None, pin=None) -> dict:
    """worker (spelltune.training.devices) and choice (spelltune.modeling.backends) default to
    this process's slot and this machine's backend. pin (spelltune.params.ParamsPin): checked
    before the final outputs are written. The run's summary ({} in a DDP process but 0)."""
    from spelltune.files import read_jsonl

    # The inputs parse before anything of an earlier run (curves, checkpoints) is removed.
    data = {split: read_jsonl(f"data/{split}.jsonl") for split in ("train", "validation")}
    from transformers import set_seed

    from spelltune.modeling import backends
    from spelltune.modeling.base import set_threads
    from spelltune.params import training_fingerprint
    from spelltune.training import recipe
    from spelltune.training.devices import claim_worker

    worker = worker or claim_worker(params.train.threads)
    choice = choice or backends.check_or_exit(params)
    tp, fingerprint, main = params.train, training_fingerprint(params), recipe.main_process()

    # Set up: where to start, the trackers (before the model: W&B starts beside its loading), the model.
    resume = recipe.resume_point(fingerprint)
    trackers = recipe.start_trackers(params, fingerprint, choice, resume) if main else None
    threads = set_threads(worker.threads)
    set_seed(tp.seed)
    model, tokenizer = backends.load(params, choice, BASE_MODEL_DIR)
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA: %d trainable of %d parameters; %d threads", trainable, total, threads)
    packing = use_packing(tp, choice, model)
    trainer, metrics, prune = build_trainer(params, model, tokenizer, data, resume, trackers, choice, packing)

    # Train.
    loaded()
    trainer.train(resume_from_checkpoint=str(resume.checkpoint) if resume.checkpoint else None)
    if main:
        trackers[0].end()
    recipe.save_last_checkpoint(trainer, resume.store)
    if not main:
        return {}
    if pin is not None:  # params.yaml changed under this run: write no outputs for DVC to record
        pin.check_or_exit()

    # Export and summarise.
    return export_and_summarise(params, trainer, resume, choice, worker, metrics, prune, (total, trainable))


def build_trainer(params, model, tokenizer, data: dict, resume, trackers, choice, packing: bool):
    """(AnswerLossTrainer, its metrics callback, its prune callback) for this run."""
    from spelltune.params import training_fingerprint
    from spelltune.training import recipe
    from spelltune.training.collators import EncodedItems, collator
    from spelltune.training.trainer import AnswerLossTrainer

    tp, prompt_format, letter_answer = params.train, params.model.prompt_format, params.data.letter_answer
    args = recipe.training_arguments(tp, resume.store, choice, packing, evaluates=bool(tp.val_loss_items))
    callbacks, metrics, prune = recipe.callbacks(tp, trackers, resume)
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
        answer_metrics=recipe.answer_scorer(tokenizer, validation[: tp.val_generate_items], prompt_format,
                                            args.per_device_eval_batch_size, letter_answer),
        grad_norm_limit=tp.grad_norm_limit,
        fingerprint=training_fingerprint(params),
        keep_last=tp.keep_last,
        live_dir=LIVE_DIR,
        # What a resumed run needs beyond HF's state; process 0 writes checkpoints.
        run_state=(lambda: {"metrics": metrics.state(), "wandb_run_id": trackers[1].id}) if trackers else dict,
    )
    return trainer, metrics, prune


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


def export_and_summarise(params, trainer, resume, choice, worker, metrics, prune, sizes) -> dict:
    """checkpoints/ (final and best), the adapter with its model card, the summaries."""
    from spelltune.files import write_json
    from spelltune.modeling import card
    from spelltune.modeling.lora import save_adapter
    from spelltune.training import checkpoints, recipe
    from spelltune.training.tracking import flat_summary

    step = trainer.state.global_step
    recipe.export_checkpoints(trainer, resume.store, CHECKPOINT_DIR)
    save_adapter(trainer.model, ADAPTER_DIR, card.base_model_name(params.model.source))
    stop_reason = recipe.stop_reason(trainer, params.train, prune)
    summary = metrics.summary(
        early_stop_reason=stop_reason,
        stopped_at_step=step,
        resumed_from_step=checkpoints.step_of(resume.checkpoint) if resume.checkpoint else None,
        tokens_seen=trainer.state.num_input_tokens_seen,
        parameters={"total": sizes[0], "trainable": sizes[1]},
        params_fingerprint=trainer.fingerprint,
        backend=choice.as_dict(),
        worker=worker.as_dict(),
    )
    write_json(summary, SUMMARY_FILE)
    write_json(recipe.train_headline(summary), TRAIN_METRICS_FILE)
    # The model card with the training facts (evaluate's metrics: `spelltune card`).
    (ADAPTER_DIR / card.CARD_FILE).write_text(card.render(card.training_facts(params, summary)))
    metrics.wandb_run.finish(flat_summary(summary))
    shutil.rmtree(resume.store)  # finished: nothing left to resume
    log.info("%s after %d steps; adapter saved to %s", stop_reason, step, ADAPTER_DIR)
    return summary


if __name__ == "__main__":
    main()
