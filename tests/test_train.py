"""The train stage's pieces on the tiny model: answer-only labels, padding, and a loss
that computes logits only at answer positions yet equals the model's own loss."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from spelltune.modeling.base import load_base_model
from spelltune.modeling.lora import build_lora_model
from spelltune.params import LoraParams
from spelltune.task.prompts import render_prompt
from spelltune.task.questions import letter_question, spelling_question
from spelltune.training.collators import IGNORE_INDEX, PadCollator, encode_example
from spelltune.training.trainer import AnswerLossTrainer


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    return load_base_model(tiny_model)


def test_prompt_formats(model_and_tokenizer):
    _, tok = model_and_tokenizer
    compact = render_prompt("Q?", "compact", tok)
    assert compact == "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
    template = render_prompt("Q?", "chat_template", tok)
    assert template.endswith(compact) and "system" in template
    # The system prompt is what the compact format saves on every example.
    assert len(tok(template)["input_ids"]) - len(tok(compact)["input_ids"]) >= 15


def test_only_answer_tokens_carry_loss(model_and_tokenizer):
    _, tok = model_and_tokenizer
    item = spelling_question("cat")
    ex = encode_example(item, tok, "compact")
    answer = [t for t in ex["labels"] if t != IGNORE_INDEX]
    assert tok.decode(answer) == "c-a-t<|im_end|>"
    n_prompt = len(ex["labels"]) - len(answer)
    assert ex["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert ex["input_ids"][n_prompt:] == answer

    letter = letter_question("cat", 2)
    spelled = encode_example(letter, tok, "compact", letter_answer="spelled")
    assert tok.decode([t for t in spelled["labels"] if t != IGNORE_INDEX]) == "c1 a2 = a<|im_end|>"


def test_collator_pads_right_without_loss():
    batch = PadCollator(pad_id=2)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [5], "labels": [5]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 2, 2]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [5, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


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


@pytest.mark.parametrize("packed_attention", [False, True])
def test_packed_batch_gives_the_padded_batch_loss_and_gradients(tiny_model, packed_attention):
    """Packing removes the padding, not a token of the loss: no example attends to another,
    whether by transformers' block-diagonal mask or by spelltune.modeling.attention's per-example cut."""
    from spelltune.modeling.attention import use_packed_attention
    from spelltune.training.collators import PackCollator

    base, tok = load_base_model(tiny_model)
    assert base.config.num_key_value_heads < base.config.num_attention_heads  # grouped-query, as SmolLM2
    model = build_lora_model(base, LoraParams(r=4, dropout=0.0))
    if packed_attention:
        use_packed_attention(model)
    items = [letter_question("banana", 3), spelling_question("house"), letter_question("at", 2)]
    examples = [encode_example(it, tok, "compact") for it in items]
    trainer_cls = AnswerLossTrainer
    losses, grads = [], []
    for batch in (PadCollator(0)(examples), PackCollator()(examples)):
        model.zero_grad()
        loss = trainer_cls.compute_loss(None, model, batch)
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    assert PackCollator()(examples)["input_ids"].shape == (1, sum(len(ex["input_ids"]) for ex in examples))
    torch.testing.assert_close(losses[1], losses[0])
    for packed, padded in zip(grads[1], grads[0]):
        torch.testing.assert_close(packed, padded, rtol=1e-4, atol=1e-6)


def test_saved_adapter_config_is_byte_stable(tiny_model, tmp_path):
    """PEFT keeps target_modules as a set; its JSON order must not depend on the hash seed."""
    import json

    from spelltune.modeling.lora import save_adapter

    model = build_lora_model(load_base_model(tiny_model)[0], LoraParams(r=4))
    save_adapter(model, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted(LoraParams().target_modules)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()


def test_stage_start_up_pauses_the_collector_then_freezes_what_loaded():
    # In a fresh interpreter: freezing the test process's objects would outlive this test.
    code = """
import gc, sys, weakref
from unittest import mock
from spelltune.training.startup import loaded, pause_collector

class Node: pass

def garbage_cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)

loaded()
assert gc.isenabled() and gc.get_freeze_count() == 0, "without a pause, loaded() must change nothing"
pause_collector()
assert not gc.isenabled()
import torch
cycle = garbage_cycle()
with mock.patch("torch.cuda.is_available", return_value=sys.argv[1] == "cuda"):
    loaded()
assert gc.isenabled() and gc.get_freeze_count() > 100_000, gc.get_freeze_count()
gc.collect()
# On a GPU the garbage is collected before freezing (it may hold device memory); on the CPU it is frozen.
assert (cycle() is None) == (sys.argv[1] == "cuda"), sys.argv[1]
"""
    for device in ("cpu", "cuda"):
        subprocess.run([sys.executable, "-c", code, device], check=True)


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
