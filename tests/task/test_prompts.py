"""The prompt formats (task/prompts.py) with the tiny model's tokenizer."""

from __future__ import annotations

import pytest

from spelltune.modeling.base import load_base_model
from spelltune.task.prompts import render_prompt


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
