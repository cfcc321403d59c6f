"""The tokenizer's alphabetic pieces, for token-level training (`data.token_pieces`)."""

from __future__ import annotations

from pathlib import Path

from spelltune.paths import BASE_MODEL_DIR


def alphabetic_pieces(model_dir: Path = BASE_MODEL_DIR) -> list[str]:
    """The tokenizer's vocabulary pieces that are lowercase a-z once their leading-space
    marker is dropped, each once, in token-id order (for BPE: merge order, frequent first)."""
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(model_dir).get_vocab()
    pieces = (piece.removeprefix("Ġ").removeprefix("▁") for piece, _ in sorted(vocab.items(), key=lambda kv: kv[1]))
    return list(dict.fromkeys(p for p in pieces if p.isascii() and p.isalpha() and p.islower()))
