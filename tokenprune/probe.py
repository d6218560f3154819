"""Attention probabilities for a few query rows, on any attention backend.

Policies need "how much does token i attend to token j" without switching the
model to eager attention. The engine keeps the attention module's INPUT of the
scored layer (normed hidden states and rotary tables, both already computed by
the model) and recomputes only the requested query rows against all keys:
``n_q x N`` per head, never ``N x N``.
"""

from __future__ import annotations

import torch
from torch import nn

from tokenprune.adapter import Adapter, repeat_heads


def attention_rows(
    adapter: Adapter,
    attention: nn.Module,
    hidden: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    valid: torch.Tensor,
    query_slots: torch.Tensor,
    key_bias: torch.Tensor | None = None,
    keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax attention of ``query_slots`` over all slots of ONE sequence.

    Args:
        adapter: supplies the family's query/key projection.
        attention: the scored layer's attention module.
        hidden: ``[N, D]`` that module's input for this row.
        position_embeddings: ``(cos, sin)`` each ``[N, d]``.
        valid: ``[N]`` bool, keys that may be attended (2-D mask).
        query_slots: ``[n_q]`` query rows.
        key_bias: ``[N]`` optional additive logit bias per key (proportional attention).
        keys: ``[H_kv, N, d]`` the layer's rotary-embedded keys when already
            known (read from the KV cache); recomputed from ``hidden`` otherwise.

    Returns:
        ``[H, n_q, N]`` float32 probabilities; causal and padding masked; a
        query with no visible key gets an all-zero row.
    """
    if keys is None:
        q, k, scaling = adapter.queries_keys(attention, hidden, position_embeddings, query_slots)
    else:
        q, scaling = adapter.queries(attention, hidden, position_embeddings, query_slots)
        k = repeat_heads(keys, q.shape[0])
    logits = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scaling
    if key_bias is not None:
        logits = logits + key_bias.float()[None, None, :]
    keys = torch.arange(hidden.shape[0], device=hidden.device)
    allowed = valid[None, :] & (keys[None, :] <= query_slots.to(hidden.device)[:, None])
    logits = logits.masked_fill(~allowed[None], float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.nan_to_num(probs, nan=0.0)


def probe_macs(
    n_queries: int, n_keys: int, hidden_size: int, heads: int, kv_heads: int, head_dim: int, cached_keys: bool = False
) -> float:
    """Multiply-adds of :func:`attention_rows`: q (and, unless cached, k) projections plus q·kᵀ."""
    key_projection = 0 if cached_keys else n_keys * hidden_size * kv_heads * head_dim
    return float(n_queries * hidden_size * heads * head_dim + key_projection + n_queries * n_keys * heads * head_dim)
