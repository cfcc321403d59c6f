"""Attention for packed rows: each example attends within itself only, at the cost of its
own length. transformers' sdpa path masks a packed row block-diagonally, but the kernel
still computes every query against every key of the row (16 examples of ~25 tokens: a
400 × 400 score matrix, 16 times the useful work). Here the row is cut into its examples
(position ids restart at 0 at each), padded on the right into a small batch, and run
through causal sdpa; padding rows are dropped again. Everything else (generation, padded
batches, one example) goes to transformers' sdpa unchanged."""

from __future__ import annotations

NAME = "packed_sdpa"


def packed_sdpa(module, query, key, value, attention_mask, scaling=None, position_ids=None, **kwargs):
    """query [1, heads, T, dim], key/value [1, kv_heads, T, dim] -> ([1, T, heads, dim], None)."""
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    total = query.shape[2]
    starts = None
    plain = kwargs.get("sliding_window") is None and kwargs.get("softcap") is None  # what the cut does not model
    if plain and position_ids is not None and query.shape[0] == 1 and key.shape[2] == total > 1:
        starts = (position_ids[0] == 0).nonzero().flatten()
    if starts is None or starts.numel() < 2 or starts[0] != 0:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      position_ids=position_ids, **kwargs)
    lengths = torch.diff(starts, append=starts.new_tensor([total]))
    offsets = torch.arange(int(lengths.max()), device=query.device)
    index = (starts[:, None] + offsets).clamp(max=total - 1)  # [examples, longest]; tails point anywhere
    real = offsets < lengths[:, None]
    q, k, v = (t[0][:, index].transpose(0, 1) for t in (query, key, value))  # [examples, heads, longest, dim]
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=kwargs.get("dropout", 0.0), is_causal=True, scale=scaling,
                                         enable_gqa=True)
    return out.transpose(1, 2)[real].unsqueeze(0), None  # real positions in row order: [1, T, heads, dim]


def use_packed_attention(model) -> None:
    """Route `model`'s attention through packed_sdpa (masks for the fallback as for sdpa)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, packed_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    model.config._attn_implementation = NAME
