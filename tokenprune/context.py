"""What a policy sees: the request (once) and each pruning layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tokenprune.adapter import VisionGrid
from tokenprune.budget import Budget, plan_kept_counts
from tokenprune.layout import Layout


@dataclass
class RequestContext:
    """One request (a batch at prefill), as the policy sees it before the decoder runs.

    Attributes:
        input_ids: ``[B, N]``.
        inputs_embeds: ``[B, N, D]`` the decoder's input embeddings (vision
            tokens already projected).
        attention_mask: ``[B, N]`` bool, False for padding.
        vision_mask: ``[B, N]`` bool, True for vision tokens.
        budget: the user's budget.
        layers: pruning layers of this attachment.
        num_layers: decoder depth.
        grids: per row, the grid of its vision tokens (None if the adapter has none).
        memo: free per-request storage for the policy (e.g. chosen raters).
        query_positions: per row, ORIGINAL positions of the prompt tokens that
            drove the policy's choice (SparseVLM's raters, FastV's query), if
            the policy sets them; ``tokenprune visualize`` highlights them.
    """

    input_ids: torch.Tensor
    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    vision_mask: torch.Tensor
    budget: Budget
    layers: tuple[int, ...]
    num_layers: int
    grids: list[VisionGrid | None]
    memo: dict[str, Any] = field(default_factory=dict)
    query_positions: dict[int, torch.Tensor] = field(default_factory=dict)
    overhead_flops: dict[str, float] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        """Rows."""
        return int(self.input_ids.shape[0])

    def vision_positions(self, row: int) -> torch.Tensor:
        """``[L_v]`` original sequence positions of the row's vision tokens, ascending."""
        return torch.nonzero(self.vision_mask[row], as_tuple=False).flatten()

    def n_vision(self, row: int) -> int:
        """Vision tokens of the row at the decoder input."""
        return int(self.vision_mask[row].sum())

    def text_positions(self, row: int) -> torch.Tensor:
        """``[L_t]`` original positions of visible tokens after the row's last vision token.

        This is the question and chat-template suffix ("text" for SparseVLM's
        raters); the system prompt before the image is excluded. Empty for a row
        without vision tokens.
        """
        vision = self.vision_positions(row)
        if vision.numel() == 0:
            return vision
        after = torch.arange(self.vision_mask.shape[1], device=vision.device) > vision.max()
        return torch.nonzero(after & self.attention_mask[row], as_tuple=False).flatten()

    def planned_counts(self, row: int, weights: Sequence[float] | None = None) -> list[int]:
        """Kept vision tokens after each pruning layer for the row, meeting the budget."""
        return plan_kept_counts(self.n_vision(row), self.budget, self.layers, self.num_layers, weights)

    def add_overhead_flops(self, label: str, multiply_adds: float) -> None:
        """Account the policy's own compute (multiply-adds) under ``label`` in the stats."""
        self.overhead_flops[label] = self.overhead_flops.get(label, 0.0) + float(multiply_adds)


AttentionFn = Callable[[int, torch.Tensor, bool], torch.Tensor]
KeysFn = Callable[[int], torch.Tensor]


@dataclass
class LayerContext:
    """One pruning layer: inputs of layer ``layer``, attention of layer ``layer - 1``.

    Indices named *slots* refer to positions in the CURRENT (possibly already
    pruned) sequence; vision tokens of a row are addressed by their rank among
    ``vision_slots(row)``.
    """

    request: RequestContext
    layer: int
    stage: int
    hidden_states: torch.Tensor
    layout: Layout
    _attention: AttentionFn
    _keys: KeysFn

    @property
    def batch_size(self) -> int:
        """Rows."""
        return self.layout.batch_size

    def vision_slots(self, row: int) -> torch.Tensor:
        """``[n]`` current slots of the row's vision tokens (merged ones included), ascending."""
        return self.layout.vision_slots(row)

    def vision_ordinals(self, row: int) -> torch.Tensor:
        """``[n]`` original vision index of each current vision token (-1 for merged tokens)."""
        return self.layout.ordinal[row, self.vision_slots(row)]

    def vision_sizes(self, row: int) -> torch.Tensor:
        """``[n]`` original tokens each current vision token stands for."""
        return self.layout.size[row, self.vision_slots(row)]

    def vision_hidden(self, row: int) -> torch.Tensor:
        """``[n, D]`` hidden states (this layer's input) of the row's vision tokens."""
        return self.hidden_states[row, self.vision_slots(row)]

    def slots_of_positions(self, row: int, positions: torch.Tensor) -> torch.Tensor:
        """Current slots of ORIGINAL sequence positions of non-vision tokens (-1 if absent)."""
        origin = self.layout.origin[row]
        is_text = self.layout.kind[row] == 1
        match = (origin[None, :] == positions[:, None]) & is_text[None, :]
        found = match.any(dim=1)
        return torch.where(found, match.float().argmax(dim=1), torch.full_like(positions, -1))

    def text_slots(self, row: int) -> torch.Tensor:
        """Current slots of :meth:`RequestContext.text_positions` of the row."""
        slots = self.slots_of_positions(row, self.request.text_positions(row))
        return slots[slots >= 0]

    def planned_keep(self, row: int, weights: Sequence[float] | None = None) -> int:
        """Kept count the budget plans for THIS pruning layer (vision tokens after it)."""
        return self.request.planned_counts(row, weights)[self.stage]

    def attention(self, row: int, query_slots: torch.Tensor, per_head: bool = False) -> torch.Tensor:
        """Attention probabilities of layer ``layer - 1`` from ``query_slots`` to every slot.

        Computed for the requested query rows only, on any attention backend
        (no eager attention, no ``heads x N x N`` tensor).

        Returns:
            ``[n_q, N]`` averaged over heads, or ``[H, n_q, N]`` with ``per_head``.
        """
        return self._attention(row, query_slots, per_head)

    def attention_to_vision(self, row: int, query_slots: torch.Tensor) -> torch.Tensor:
        """``[n_q, n_vision]`` head-averaged attention from queries to the row's vision tokens."""
        return self.attention(row, query_slots)[:, self.vision_slots(row)]

    def key_states(self, row: int) -> torch.Tensor:
        """``[H, N, d]`` rotary-embedded keys of layer ``layer - 1`` (heads repeated for GQA)."""
        return self._keys(row)
