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


def word_tokens(word: str, prompt_format: str, tokenizer) -> int:
    """How many tokens `word` takes inside its canonical spelling prompt (quoted, lowercase):
    most common words are one token, whose letters the model must know by heart."""
    from spelltune.task.wordings import canonical_question

    prompt = render_prompt(canonical_question("spelling", word), prompt_format, tokenizer)
    start = prompt.index(f"'{word}'") + 1
    end = start + len(word)
    offsets = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return sum(1 for a, b in offsets if a < end and b > start)
