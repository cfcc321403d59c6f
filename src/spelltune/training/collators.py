"""Training examples: prompt + answer token ids with the prompt masked out of the loss,
tokenized lazily, and batched padded or packed."""

from __future__ import annotations

from spelltune.task.prompts import end_of_answer, render_prompt
from spelltune.task.questions import answer_text

IGNORE_INDEX = -100  # label value that carries no loss


def encode_example(item: dict, tokenizer, prompt_format: str, letter_answer: str = "direct") -> dict:
    """Token ids of prompt + answer; labels mask the prompt so only the answer is learned."""
    prompt = tokenizer(render_prompt(item["question"], prompt_format, tokenizer), add_special_tokens=False)["input_ids"]
    reply = answer_text(item, letter_answer) + end_of_answer(tokenizer)
    answer = tokenizer(reply, add_special_tokens=False)["input_ids"]
    return {"input_ids": prompt + answer, "labels": [IGNORE_INDEX] * len(prompt) + answer}


class EncodedItems:
    """A split's items, tokenized as the data loader asks for them: the first step does not
    wait for the whole split, and a short run reads only part of it."""

    def __init__(self, items: list[dict], tokenizer, prompt_format: str, letter_answer: str = "direct"):
        self.items, self.tokenizer, self.prompt_format = items, tokenizer, prompt_format
        self.letter_answer = letter_answer

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return encode_example(self.items[index], self.tokenizer, self.prompt_format, self.letter_answer)


class PadCollator:
    """Right-pads a batch to its longest example; padded labels carry no loss."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        width = max(len(ex["input_ids"]) for ex in batch)
        ids, labels, mask = [], [], []
        for ex in batch:
            pad = width - len(ex["input_ids"])
            ids.append(ex["input_ids"] + [self.pad_id] * pad)
            labels.append(ex["labels"] + [IGNORE_INDEX] * pad)
            mask.append([1] * len(ex["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }


class PackCollator:
    """Packs a batch into one row without padding: position ids restart at every example,
    and with no attention mask transformers masks attention block-diagonally from them
    (masking_utils.find_packed_sequence_indices), so no example sees another. The same
    examples per step as PadCollator, the same answer tokens in the loss."""

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        return {
            "input_ids": torch.tensor([[t for ex in batch for t in ex["input_ids"]]]),
            "labels": torch.tensor([[t for ex in batch for t in ex["labels"]]]),
            "position_ids": torch.tensor([[i for ex in batch for i in range(len(ex["input_ids"]))]]),
        }


def collator(packing: bool, pad_id: int):
    return PackCollator() if packing else PadCollator(pad_id)
