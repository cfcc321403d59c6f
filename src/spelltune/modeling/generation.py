"""Batched greedy answers: used by the evaluate stage and for val accuracy during training."""

from __future__ import annotations


def max_new_tokens(item: dict, chatty: bool = False, letter_answer: str = "direct") -> int:
    """A tight budget per task: one letter (or `b1 a2 n3 = n`, two tokens a position), or
    the spelled letters, then end-of-turn.
    The untrained base model answers in sentences ("The 3rd letter of 'banana' is 'n'."),
    so it gets room for one: it is scored once, not per experiment."""
    per_letter = 2 if "-" in item["answer"] else 1  # "b-a-n-a-n-a": letter and separator; "b a n a n a": one
    if item["task"] == "letter_position":
        budget = 2 * item["position"] + 5 if letter_answer == "spelled" and not chatty else 3
    else:
        budget = per_letter * len(item["word"]) + 2
    return budget + 24 if chatty else budget


def generate_replies(
    model, tokenizer, items: list[dict], prompt_format: str, batch_size: int, chatty: bool = False,
    letter_answer: str = "direct",
) -> list[str]:
    """Batched, left-padded greedy generation that stops at end-of-turn. Items are
    grouped by task and prompt length so that batches carry little padding."""
    import torch
    from tqdm import tqdm

    from spelltune.task.prompts import render_prompt

    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"  # restored at the end
    prompts = [render_prompt(it["question"], prompt_format, tokenizer) for it in items]
    def budget(i: int) -> int:
        return max_new_tokens(items[i], chatty, letter_answer)

    order = sorted(range(len(items)), key=lambda i: (items[i]["task"], budget(i), len(prompts[i])))
    # Batches never mix tasks: a letter question needs 3 new tokens, a spelling one ~20.
    batches = []
    for task in dict.fromkeys(items[i]["task"] for i in order):
        same = [i for i in order if items[i]["task"] == task]
        batches += [same[start : start + batch_size] for start in range(0, len(same), batch_size)]
    replies = [""] * len(items)
    was_training = model.training
    model.eval()
    # The prompt pass hands the output layer the last position of each row, a strided
    # [rows, 1, hidden] view that torch multiplies as one matrix-vector product per row;
    # made contiguous it is one matrix product (faster on the CPU, docs/results.md).
    contiguous = model.get_output_embeddings().register_forward_pre_hook(
        lambda _, args: (args[0].contiguous(), *args[1:])
    )
    try:
        with torch.inference_mode(), tqdm(total=len(items), desc="generate", unit="q") as bar:
            for idx in batches:
                enc = tokenizer(
                    [prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
                ).to(model.device)
                out = model.generate(
                    **enc,
                    max_new_tokens=max(budget(i) for i in idx),
                    do_sample=False,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                )
                new_tokens = out[:, enc["input_ids"].shape[1] :]
                for row, i in enumerate(idx):
                    # Each reply within its own item's budget, as if generated alone.
                    text = tokenizer.decode(new_tokens[row, : budget(i)], skip_special_tokens=True)
                    replies[i] = text.strip()
                bar.update(len(idx))
    finally:
        contiguous.remove()
        model.train(was_training)
        tokenizer.padding_side = padding_side
    return replies
