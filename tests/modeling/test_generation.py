"""Greedy replies on the tiny model: batched, each the reply its question gets alone."""

from __future__ import annotations

import pytest

from spelltune.modeling.base import load_base_model
from spelltune.modeling.generation import generate_replies
from spelltune.params import DataParams
from spelltune.task.questions import build_splits


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    """The tiny model with its matrices scaled up: at its initial scale it answers every
    question with the same newlines; sharper, its replies differ from question to question."""
    import torch

    model, tok = load_base_model(tiny_model)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.mul_(8)
    return model, tok


@pytest.fixture(scope="module")
def items():
    """Held-out items as evaluate scores them: both tasks, canonical and held-out wordings."""
    return build_splits(DataParams(train_words=40, validation_words=8, test_words=4))["validation"]


@pytest.mark.parametrize("letter_answer", ["spelled", "direct"])
def test_batched_replies_are_those_of_each_question_alone(model_and_tokenizer, items, letter_answer):
    """Left padding, batches sorted by length and per-item budgets change no reply."""
    model, tok = model_and_tokenizer
    alone = [generate_replies(model, tok, [it], "compact", 1, letter_answer=letter_answer)[0] for it in items]
    assert len(set(alone)) > 1  # the replies differ from question to question: a real comparison
    for batch_size in (5, 8, 64):
        assert generate_replies(model, tok, items, "compact", batch_size, letter_answer=letter_answer) == alone


def test_free_questions_and_the_chatty_base_model_batch_the_same(model_and_tokenizer, items):
    from spelltune.experiments.use import item_for_question

    model, tok = model_and_tokenizer
    asked = [item_for_question(q) for q in ("What is the third letter of 'banana'?", "Tell me a joke.")]
    assert asked[1]["task"] == "other"
    mixed = asked + items[:6]
    for chatty in (False, True):
        alone = [generate_replies(model, tok, [it], "compact", 1, chatty=chatty)[0] for it in mixed]
        assert generate_replies(model, tok, mixed, "compact", 4, chatty=chatty) == alone
