"""Examples and batches (training/collators.py) on the tiny model: answer-only labels, padding,
and packed batches that give the padded batch's loss and gradients."""

from __future__ import annotations

import pytest
import torch

from spelltune.modeling.base import load_base_model
from spelltune.modeling.lora import build_lora_model
from spelltune.params import LoraParams
from spelltune.task.questions import letter_question, spelling_question
from spelltune.training.collators import IGNORE_INDEX, PadCollator, encode_example
from spelltune.training.trainer import AnswerLossTrainer


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    return load_base_model(tiny_model)


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
