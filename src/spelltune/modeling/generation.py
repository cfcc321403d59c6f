"""Batched greedy answers: used by the evaluate stage, `outside`, `predict`, `ask` and for
val accuracy during training.

Most replies of a trained model are the answer it was taught, so each row's expected
answer is checked first, as a draft, in one forward pass over prompt + draft (speculative
decoding with the answer as the draft): where every greedy token agrees with the draft,
the greedy reply is the draft, found without the token-by-token loop; where the greedy
token departs from it at some position, the agreeing tokens and the greedy token there
are kept and ordinary greedy decoding goes on from that point. Replies are the greedy
ones either way (tests/test_train.py compares them with the plain loop)."""

from __future__ import annotations

from contextlib import contextmanager


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


def draft_tokens(item: dict, tokenizer, letter_answer: str) -> list[int] | None:
    """The tokens the model was trained to reply to `item` (answer, then end-of-turn), as
    the training examples tokenize them; None for a question of no known task."""
    from spelltune.task.prompts import end_of_answer
    from spelltune.task.questions import answer_text

    if item.get("task") not in ("letter_position", "spelling"):
        return None
    text = answer_text(item, letter_answer) + end_of_answer(tokenizer)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def generate_replies(
    model, tokenizer, items: list[dict], prompt_format: str, batch_size: int, chatty: bool = False,
    letter_answer: str = "direct", speculate: bool = True,
) -> list[str]:
    """Greedy replies to `items`, each within its own budget (max_new_tokens), as if
    generated alone. `speculate=False`: the plain batched loop for every row (what
    `make bench` compares against); the chatty base model never gets drafts."""
    from tqdm import tqdm

    from spelltune.task.prompts import render_prompt

    prompts = [tokenizer(render_prompt(it["question"], prompt_format, tokenizer), add_special_tokens=False)["input_ids"]
               for it in items]
    budgets = [max_new_tokens(it, chatty, letter_answer) for it in items]
    drafts = [draft_tokens(it, tokenizer, letter_answer) if speculate and not chatty else None for it in items]
    known: list[list[int]] = [[] for _ in items]  # each row's greedy tokens found so far
    done = [False] * len(items)
    eos = tokenizer.eos_token_id
    with _inference(model, tokenizer), tqdm(total=len(items), desc="generate", unit="q") as bar:
        for idx in _batches(items, [i for i, d in enumerate(drafts) if d], prompts, budgets, batch_size):
            for i, tokens in zip(idx, _verify(model, tokenizer, [prompts[i] for i in idx], [drafts[i] for i in idx])):
                known[i] = tokens[: budgets[i]]
                done[i] = len(known[i]) == budgets[i] or known[i][-1] == eos
            bar.update(sum(done[i] for i in idx))
        rest = [i for i in range(len(items)) if not done[i]]
        remaining = [budgets[i] - len(known[i]) for i in range(len(items))]
        for idx in _batches(items, rest, [p + k for p, k in zip(prompts, known)], remaining, batch_size):
            for i, tokens in zip(idx, _greedy(model, tokenizer, [prompts[i] + known[i] for i in idx],
                                              max(remaining[i] for i in idx))):
                known[i] = (known[i] + tokens)[: budgets[i]]
            bar.update(len(idx))
    return [tokenizer.decode(tokens, skip_special_tokens=True).strip() for tokens in known]


def _batches(items, rows: list[int], inputs: list[list[int]], budgets: list[int], size: int) -> list[list[int]]:
    """Rows grouped by task, budget and input length, so that batches carry little padding;
    batches never mix tasks (a letter question needs a few new tokens, a spelling one ~20)."""
    order = sorted(rows, key=lambda i: (items[i]["task"], budgets[i], len(inputs[i])))
    batches = []
    for task in dict.fromkeys(items[i]["task"] for i in order):
        same = [i for i in order if items[i]["task"] == task]
        batches += [same[start : start + size] for start in range(0, len(same), size)]
    return batches


@contextmanager
def _inference(model, tokenizer):
    """Eval mode, no autograd, left padding; and the output layer fed contiguous rows: the
    prompt pass hands it the last positions of each row, a strided view that torch
    multiplies as one matrix-vector product per row, where a contiguous one is one matrix
    product (faster on the CPU, docs/results.md). All restored on the way out."""
    import torch

    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    contiguous = model.get_output_embeddings().register_forward_pre_hook(
        lambda _, args: (args[0].contiguous(), *args[1:])
    )
    try:
        with torch.inference_mode():
            yield
    finally:
        contiguous.remove()
        model.train(was_training)
        tokenizer.padding_side = padding_side


def _left_padded(rows: list[list[int]], pad_id: int, device):
    """input_ids, attention_mask and the position ids generate() gives left-padded rows."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    return ids, mask, positions


def _verify(model, tokenizer, prompts: list[list[int]], drafts: list[list[int]]) -> list[list[int]]:
    """Each row's greedy tokens that one pass over prompt + draft determines: the draft's
    tokens while the greedy prediction agrees with them, then the greedy token where it
    departs (the whole draft when it never does)."""
    ids, mask, positions = _left_padded([p + d for p, d in zip(prompts, drafts)], tokenizer.pad_token_id, model.device)
    keep = max(len(d) for d in drafts) + 1  # the predictions of every draft token, and the one after
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep,
                   use_cache=False).logits
    predicted = logits.argmax(-1).tolist()
    found = []
    for row, draft in zip(predicted, drafts):
        greedy = row[keep - 1 - len(draft) : keep - 1]  # greedy[j]: the prediction given prompt + draft[:j]
        agree = next((j for j, (g, d) in enumerate(zip(greedy, draft)) if g != d), len(draft))
        found.append(draft if agree == len(draft) else draft[:agree] + [greedy[agree]])
    return found


def _greedy(model, tokenizer, rows: list[list[int]], new_tokens: int) -> list[list[int]]:
    """Greedy continuations of token rows (generate(), batched, left-padded), each up to and
    including its end-of-turn."""
    ids, mask, _ = _left_padded(rows, tokenizer.pad_token_id, model.device)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    found = []
    for row in out[:, ids.shape[1] :].tolist():
        end = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
        found.append(row[:end])
    return found
