"""AnswerLossTrainer (training/trainer.py) on the tiny model: a loss that computes logits only at
answer positions yet equals the model's own, a NaN loss that stops with its step, and the
private HF hooks it builds on."""

from __future__ import annotations

import pytest
import torch

from spelltune.modeling.base import load_base_model
from spelltune.modeling.lora import build_lora_model
from spelltune.params import LoraParams
from spelltune.task.questions import letter_question, spelling_question
from spelltune.training.collators import IGNORE_INDEX, PadCollator, encode_example
from spelltune.training.trainer import AnswerLossTrainer


@pytest.mark.parametrize("lora", [False, True])
def test_answer_only_loss_equals_the_full_loss(tiny_model, lora):
    model, tok = load_base_model(tiny_model)
    if lora:
        model = build_lora_model(model, LoraParams(r=4, dropout=0.0))
    items = [letter_question("banana", 3), spelling_question("house"), letter_question("at", 2)]
    batch = PadCollator(tok.pad_token_id)([encode_example(it, tok, "compact") for it in items])
    full = model(**batch).loss  # HF's own loss: logits at every position
    trainer_cls = AnswerLossTrainer
    ours = trainer_cls.compute_loss(None, model, batch)
    torch.testing.assert_close(ours, full)
    n_answer = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
    torch.testing.assert_close(trainer_cls.compute_loss(None, model, batch, num_items_in_batch=2 * n_answer), full / 2)


def test_nan_loss_stops_with_the_step(tiny_model, tmp_path):
    """A NaN in the weights makes the loss NaN: the trainer raises, naming the step."""
    from transformers import TrainingArguments

    from spelltune.modeling.base import load_base_model
    from spelltune.modeling.lora import build_lora_model
    from spelltune.params import LoraParams
    from spelltune.task.questions import spelling_question
    from spelltune.training.collators import PadCollator, encode_example
    from spelltune.training.trainer import AnswerLossTrainer, TrainingDiverged

    model, tok = load_base_model(tiny_model)
    model = build_lora_model(model, LoraParams(r=2, alpha=4, target_modules=["q_proj"]))
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n).fill_(float("nan"))
    data = [encode_example(spelling_question(w), tok, "compact") for w in ("cat", "dog", "bird", "fish")]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=2,
                             report_to="none", use_cpu=True, save_strategy="no")
    trainer = AnswerLossTrainer(model=model, args=args, train_dataset=data, data_collator=PadCollator(tok.pad_token_id))
    with pytest.raises(TrainingDiverged, match=r"^step 1: the loss is nan$"):
        trainer.train()


def test_the_private_trainer_hooks_we_build_on_are_still_there():
    """AnswerLossTrainer overrides two private HF hooks (no public one sees the norm before
    the update, or stages a checkpoint) and calls HF's private savers: this fails first,
    naming the hook, when a transformers release (pinned in pyproject.toml) changes one."""
    import inspect

    from transformers import Trainer

    expected = {
        "_get_grad_norm": ["self", "model", "grad_norm"],
        "_save_checkpoint": ["self", "model", "trial"],
        "_save_optimizer_and_scheduler": ["self", "output_dir"],
        "_save_scaler": ["self", "output_dir"],
        "_save_rng_state": ["self", "output_dir"],
        "save_model": ["self", "output_dir", "_internal_call"],
    }
    for name, params in expected.items():
        assert list(inspect.signature(getattr(Trainer, name)).parameters) == params, name
    source = inspect.getsource(Trainer)
    assert "self._get_grad_norm(" in source, "HF no longer asks _get_grad_norm for the norm"
    # The public evaluate() override relies on HF saving after the evaluation, in one place.
    saving = inspect.getsource(Trainer._maybe_log_save_evaluate)
    assert saving.index("self._evaluate(") < saving.index("if self.control.should_save:") < saving.index(
        "self._save_checkpoint("), "HF's evaluate-then-save order changed"
    assert "self.evaluate(" in inspect.getsource(Trainer._evaluate)
