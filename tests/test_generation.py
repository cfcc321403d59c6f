"""Greedy replies on the tiny model: the draft-checked path gives the plain loop's replies,
byte for byte, whether a draft is taken whole, departs midway or at the first token."""

from __future__ import annotations

import pytest

from spelltune.modeling.base import load_base_model
from spelltune.modeling.generation import _greedy, _inference, _verify, generate_replies, max_new_tokens
from spelltune.params import DataParams
from spelltune.task.prompts import render_prompt
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


def prompt_ids(tok, items):
    return [tok(render_prompt(it["question"], "compact", tok), add_special_tokens=False)["input_ids"] for it in items]


@pytest.mark.parametrize("letter_answer", ["spelled", "direct"])
def test_replies_equal_the_plain_loop(model_and_tokenizer, items, letter_answer):
    model, tok = model_and_tokenizer
    plain = generate_replies(model, tok, items, "compact", 8, letter_answer=letter_answer, speculate=False)
    assert generate_replies(model, tok, items, "compact", 8, letter_answer=letter_answer) == plain
    assert generate_replies(model, tok, items, "compact", 5, letter_answer=letter_answer) == plain  # other batches
    assert len(set(plain)) > 1  # the replies differ from item to item: a real comparison


def test_a_draft_is_taken_while_greedy_agrees_and_left_where_it_departs(model_and_tokenizer, items):
    model, tok = model_and_tokenizer
    prompts = prompt_ids(tok, items)
    budget = max(max_new_tokens(it, letter_answer="spelled") for it in items)
    with _inference(model, tok):
        greedy = _greedy(model, tok, prompts, budget)  # the plain loop's tokens
        assert _verify(model, tok, prompts, greedy) == greedy  # the greedy reply as draft: taken whole
        for cut in (0, 1, 3):  # a draft that departs from the greedy tokens at `cut`
            rows = [(p, g) for p, g in zip(prompts, greedy) if len(g) > cut + 1]
            wrong = [g[:cut] + [(g[cut] + 1) % len(tok)] + g[cut + 1 :] for _, g in rows]
            found = _verify(model, tok, [p for p, _ in rows], wrong)
            assert found == [g[: cut + 1] for _, g in rows]  # agreeing tokens, then the greedy one


def test_free_questions_and_the_chatty_base_model_take_the_plain_loop(model_and_tokenizer):
    from spelltune.experiments.use import item_for_question

    model, tok = model_and_tokenizer
    asked = [item_for_question(q) for q in ("What is the 3rd letter of 'banana'?", "Tell me a joke.")]
    assert asked[1]["task"] == "other"
    for chatty in (False, True):
        plain = generate_replies(model, tok, asked, "compact", 2, chatty=chatty, speculate=False)
        assert generate_replies(model, tok, asked, "compact", 2, chatty=chatty) == plain
