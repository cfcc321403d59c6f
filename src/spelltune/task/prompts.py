"""The prompt a question is asked in, and the token that closes an answer."""

from __future__ import annotations

# ChatML, the format SmolLM2 was instruction-tuned on, without the default system prompt.
COMPACT_PROMPT = "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def render_prompt(question: str, prompt_format: str, tokenizer) -> str:
    if prompt_format == "compact":
        return COMPACT_PROMPT.format(question=question)
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )


def end_of_answer(tokenizer) -> str:
    """The token that closes an assistant turn; generation stops on it."""
    return tokenizer.eos_token
