"""What a policy returns at a pruning layer: one :class:`RowSelection` per row."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RowSelection:
    """A policy's decision for one row at one pruning layer.

    All indices refer to the row's CURRENT vision tokens (``ctx.vision_slots(b)``
    order, i.e. ascending sequence order), not to sequence positions. The engine
    keeps every non-vision token itself.

    Attributes:
        keep: ``[k]`` vision tokens that survive, any order (the engine restores
            sequence order).
        keep_hidden: ``[k, D]`` optional replacement hidden states for the kept
            tokens, aligned with ``keep`` (token merging writes merged states here).
        keep_size: ``[k]`` optional new sizes (originals represented) of the kept
            tokens, aligned with ``keep``.
        merged_hidden: ``[m, D]`` optional NEW tokens (e.g. recycled clusters),
            inserted right after the row's last vision token.
        merged_anchor: ``[m]`` for each new token, the vision token whose rotary
            position (and position id) it takes.
        merged_members: for each new token, ``[j]`` vision tokens it stands for
            (statistics and visualisation; sizes default to the member count).
        scores: ``[n]`` optional per-vision-token scores, for visualisation.
    """

    keep: torch.Tensor
    keep_hidden: torch.Tensor | None = None
    keep_size: torch.Tensor | None = None
    merged_hidden: torch.Tensor | None = None
    merged_anchor: torch.Tensor | None = None
    merged_members: list[torch.Tensor] | None = None
    scores: torch.Tensor | None = None

    @classmethod
    def keep_all(cls, n_vision: int, device: torch.device | str = "cpu") -> RowSelection:
        """Keep every current vision token."""
        return cls(keep=torch.arange(n_vision, device=device))

    @property
    def n_merged(self) -> int:
        """Number of new merged tokens."""
        return 0 if self.merged_hidden is None else int(self.merged_hidden.shape[0])

    def validate(self, n_vision: int, hidden_size: int) -> None:
        """Raise ``ValueError`` if the selection is inconsistent with ``n_vision`` tokens."""
        keep = self.keep
        if keep.dim() != 1 or keep.dtype not in (torch.int64, torch.int32):
            raise ValueError("RowSelection.keep must be a 1-D integer tensor")
        if keep.numel() and (int(keep.min()) < 0 or int(keep.max()) >= n_vision):
            raise ValueError(f"RowSelection.keep indexes outside the {n_vision} vision tokens")
        if keep.unique().numel() != keep.numel():
            raise ValueError("RowSelection.keep has duplicate indices")
        for name in ("keep_hidden", "keep_size"):
            value = getattr(self, name)
            if value is not None and value.shape[0] != keep.numel():
                raise ValueError(f"RowSelection.{name} must align with keep")
        if self.merged_hidden is not None:
            m = self.merged_hidden.shape[0]
            if self.merged_hidden.shape[-1] != hidden_size:
                raise ValueError("RowSelection.merged_hidden has the wrong hidden size")
            if self.merged_anchor is None or self.merged_anchor.shape != (m,):
                raise ValueError("RowSelection.merged_anchor must give one anchor per merged token")
            if m and (int(self.merged_anchor.min()) < 0 or int(self.merged_anchor.max()) >= n_vision):
                raise ValueError("RowSelection.merged_anchor indexes outside the vision tokens")
            if self.merged_members is not None and len(self.merged_members) != m:
                raise ValueError("RowSelection.merged_members must list members per merged token")
