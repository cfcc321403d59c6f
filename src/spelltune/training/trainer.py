"""The HF Trainer subclass every run trains with: the loss on answer tokens only, guards
against divergence, greedy validation answers, and atomic checkpoints with a manifest.

The loss runs the output layer only at positions whose next token is an answer token: the
prompt positions carry no loss, and the output layer is the widest matrix of a small model.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer
from transformers.trainer_callback import ExportableState

from spelltune.training import checkpoints
from spelltune.training.collators import IGNORE_INDEX


class TrainingDiverged(RuntimeError):
    """A NaN/inf loss or gradient, or a gradient norm beyond train.grad_norm_limit."""


class AnswerLossTrainer(Trainer):
    """Trainer(..., answer_metrics=, grad_norm_limit=, fingerprint=, keep_last=, live_dir=,
    run_state=) on top of HF's own arguments:

    answer_metrics: model -> {letter_position_accuracy, ...} from greedy answers, joined to
        each evaluation's metrics (None: loss only);
    grad_norm_limit: a larger pre-clipping gradient norm stops the run (TrainingDiverged);
    fingerprint, run_state: recorded in each checkpoint's manifest (what a resumed run
        needs beyond HF's state); keep_last: checkpoints kept besides the best;
    live_dir: the DVCLive curves so far, copied into each checkpoint.
    """

    loss_is_scaled_for_ga = True  # we divide by the answer tokens of the whole accumulated batch

    def __init__(self, *args, answer_metrics: Callable | None = None, grad_norm_limit: float = math.inf,
                 fingerprint: str = "", keep_last: int = 2, live_dir: Path | None = None,
                 run_state: Callable[[], dict] = dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.answer_metrics = answer_metrics
        self.grad_norm_limit = grad_norm_limit
        self.fingerprint = fingerprint
        self.keep_last = keep_last
        self.live_dir = live_dir
        self.run_state = run_state

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
        # Private HF hook, the one place that sees the pre-clipping norm before the update.
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

    def evaluate(self, *args, **kwargs):
        # Save at this evaluation (not only every save_every steps) where HF will mark a new
        # best, so that the best step always has a checkpoint to restore, and where the run
        # stops here (early stopping, pruning), so that its last step is exported too.
        metrics = super().evaluate(*args, **kwargs)
        if self.control.should_training_stop or self.beats_best(metrics):
            self.control.should_save = True
        return metrics

    def beats_best(self, metrics: dict) -> bool:
        """HF's own rule for a new best (metric_for_best_model, greater_is_better)."""
        key = self.args.metric_for_best_model
        value = None if key is None else metrics.get(key if key.startswith("eval_") else f"eval_{key}")
        best = self.state.best_metric
        if value is None:
            return False
        return best is None or (value > best if self.args.greater_is_better else value < best)

    def _save_checkpoint(self, model, trial):
        """HF's checkpoint content (its private savers), staged and renamed into place with a
        manifest. In a DDP run every process adds its RNG state; process 0 writes the rest."""
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
            self._commit(staging, root, best)
        self.accelerator.wait_for_everyone()

    def _commit(self, staging: Path, root: Path, best: Path | None) -> None:
        for cb in self.callback_handler.callbacks + [self.control]:
            if isinstance(cb, ExportableState):
                self.state.stateful_callbacks[cb.__class__.__name__] = cb.state()
        self.state.save_to_json(str(staging / "trainer_state.json"))
        if self.live_dir is not None and self.live_dir.exists():
            shutil.copytree(self.live_dir, staging / "live")
        checkpoints.commit(staging, self.fingerprint, self.run_state())
        checkpoints.rotate(root, self.keep_last, best)
