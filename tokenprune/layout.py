"""The token layout of one pruning stage and how a selection transforms it.

A :class:`Layout` describes, slot by slot, the sequence a group of decoder
layers sees: where each slot came from, what kind of token it is, whether it
is visible (2-D mask), and how many original tokens it stands for. Pure tensor
bookkeeping, independent of any model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tokenprune.selection import RowSelection

FILLER, TEXT, VISION, MERGED = 0, 1, 2, 3


@dataclass
class Layout:
    """Slot-by-slot description of a batch, each tensor ``[B, N]``.

    Attributes:
        origin: original sequence position of the slot; for merged tokens the
            position of their anchor; -1 for filler slots.
        kind: FILLER, TEXT (any non-vision input token, padding included),
            VISION or MERGED.
        valid: visible as a key (the 2-D attention mask of this stage).
        size: original tokens represented (1 for ordinary tokens).
        ordinal: index among the row's original vision tokens (VISION slots),
            else -1.
        members: per row, ``{slot: original vision ordinals}`` for MERGED slots.
    """

    origin: torch.Tensor
    kind: torch.Tensor
    valid: torch.Tensor
    size: torch.Tensor
    ordinal: torch.Tensor
    members: list[dict[int, list[int]]] = field(default_factory=list)

    @classmethod
    def initial(cls, vision_mask: torch.Tensor, attention_mask: torch.Tensor) -> Layout:
        """The unpruned layout of a request: ``vision_mask``/``attention_mask`` ``[B, N]`` bool."""
        batch, n = vision_mask.shape
        device = vision_mask.device
        origin = torch.arange(n, device=device).expand(batch, n).clone()
        kind = torch.where(vision_mask, VISION, TEXT)
        ordinal = torch.where(vision_mask, vision_mask.long().cumsum(-1) - 1, -1)
        return cls(
            origin=origin,
            kind=kind,
            valid=attention_mask.bool().clone(),
            size=torch.ones(batch, n, device=device),
            ordinal=ordinal,
            members=[{} for _ in range(batch)],
        )

    @property
    def batch_size(self) -> int:
        """Rows."""
        return int(self.kind.shape[0])

    @property
    def length(self) -> int:
        """Slots per row (fillers included)."""
        return int(self.kind.shape[1])

    def vision_slots(self, row: int) -> torch.Tensor:
        """Ascending slot indices of the row's current vision tokens (VISION and MERGED)."""
        kind = self.kind[row]
        return torch.nonzero((kind == VISION) | (kind == MERGED), as_tuple=False).flatten()

    def vision_count(self) -> list[int]:
        """Current vision tokens per row."""
        return [int(n) for n in ((self.kind == VISION) | (self.kind == MERGED)).sum(-1).tolist()]

    def token_count(self) -> list[int]:
        """Visible (valid) tokens per row."""
        return [int(n) for n in self.valid.sum(-1).tolist()]

    def kept_ordinals(self, row: int) -> list[int]:
        """Original vision ordinals of the row's surviving un-merged vision tokens, ascending."""
        ordinals = self.ordinal[row][self.kind[row] == VISION]
        return sorted(int(x) for x in ordinals.tolist())

    def merged_groups(self, row: int) -> list[list[int]]:
        """Original vision ordinals represented by each merged token of the row, in slot order."""
        return [self.members[row][slot] for slot in sorted(self.members[row])]


@dataclass
class Transition:
    """How to build the next stage from the current one.

    Attributes:
        layout: the next stage's layout.
        source: ``[B, N']`` current slot each new slot copies hidden states,
            rotary embeddings and position ids from (the anchor for merged
            tokens; for fillers the row's invisible slots in order, so a
            left-padded row that keeps everything maps to itself).
        overrides: per row, ``(slots [j], hidden [j, D])`` hidden states to write
            after gathering (merged tokens and re-merged kept tokens).
    """

    layout: Layout
    source: torch.Tensor
    overrides: list[tuple[torch.Tensor, torch.Tensor] | None]


def apply_selections(layout: Layout, selections: list[RowSelection]) -> Transition:
    """Arrange each row as [fillers][text and kept vision in order, merged after the last vision token].

    Fillers go on the LEFT so that every row's last real token stays in the
    last slot (generation reads the last slot's logits). Every visible
    non-vision slot is kept; padding is invisible, so it is dropped like
    earlier fillers, which are re-created as needed.
    """
    batch = layout.batch_size
    device = layout.kind.device
    rows: list[dict[str, object]] = []
    for b in range(batch):
        sel = selections[b]
        vision = layout.vision_slots(b)
        kind = layout.kind[b]
        text = torch.nonzero((kind == TEXT) & layout.valid[b], as_tuple=False).flatten()
        keep = sel.keep.to(device=device, dtype=torch.long)
        order = torch.sort(torch.cat([text, vision[keep]])).values
        n_merged = sel.n_merged
        if n_merged:
            split = int((order <= vision.max()).sum()) if vision.numel() else 0
            anchors = vision[sel.merged_anchor.to(device=device, dtype=torch.long)]
            source = torch.cat([order[:split], anchors, order[split:]])
            merged_at = torch.arange(split, split + n_merged, device=device)
        else:
            source = order
            merged_at = torch.empty(0, dtype=torch.long, device=device)
        rows.append({"source": source, "merged_at": merged_at, "keep": keep, "vision": vision})

    new_len = max(int(row["source"].numel()) for row in rows)  # type: ignore[union-attr]
    shape = (batch, new_len)
    source = torch.zeros(shape, dtype=torch.long, device=device)
    origin = torch.full(shape, -1, dtype=torch.long, device=device)
    kind = torch.full(shape, FILLER, dtype=torch.long, device=device)
    valid = torch.zeros(shape, dtype=torch.bool, device=device)
    size = torch.ones(shape, dtype=layout.size.dtype, device=device)
    ordinal = torch.full(shape, -1, dtype=torch.long, device=device)
    members: list[dict[int, list[int]]] = []
    overrides: list[tuple[torch.Tensor, torch.Tensor] | None] = []

    for b, row in enumerate(rows):
        sel = selections[b]
        src: torch.Tensor = row["source"]  # type: ignore[assignment]
        pad = new_len - src.numel()
        source[b, :pad] = _filler_sources(layout.valid[b], pad)
        source[b, pad:] = src
        origin[b, pad:] = layout.origin[b, src]
        kind[b, pad:] = layout.kind[b, src]
        valid[b, pad:] = layout.valid[b, src]
        size[b, pad:] = layout.size[b, src]
        ordinal[b, pad:] = layout.ordinal[b, src]
        row_members = _carry_members(layout.members[b], src, pad)

        merged_slots = row["merged_at"] + pad  # type: ignore[operator]
        override_slots, override_values = [], []
        if sel.n_merged:
            kind[b, merged_slots] = MERGED
            valid[b, merged_slots] = True
            ordinal[b, merged_slots] = -1
            vision: torch.Tensor = row["vision"]  # type: ignore[assignment]
            for j, slot in enumerate(merged_slots.tolist()):
                member_idx = (
                    sel.merged_members[j] if sel.merged_members is not None else sel.merged_anchor[j : j + 1]
                )
                row_members[slot] = _originals(layout, b, vision[member_idx.to(device=device, dtype=torch.long)])
                size[b, slot] = float(len(row_members[slot])) if sel.merged_members is not None else 1.0
            override_slots.append(merged_slots)
            override_values.append(sel.merged_hidden)
        if sel.keep_hidden is not None or sel.keep_size is not None:
            kept_slots = _new_slots(src, row["merged_at"], layout.length)[row["vision"][row["keep"]]] + pad  # type: ignore[index]
            if sel.keep_size is not None:
                size[b, kept_slots] = sel.keep_size.to(size.dtype)
            if sel.keep_hidden is not None:
                override_slots.append(kept_slots)
                override_values.append(sel.keep_hidden)
        overrides.append(
            (torch.cat(override_slots), torch.cat(override_values)) if override_slots else None
        )
        members.append(row_members)

    new_layout = Layout(origin=origin, kind=kind, valid=valid, size=size, ordinal=ordinal, members=members)
    return Transition(layout=new_layout, source=source, overrides=overrides)


def _filler_sources(valid: torch.Tensor, count: int) -> torch.Tensor:
    """Sources of ``count`` filler slots: the row's last invisible slots, topped up with slot 0."""
    invisible = torch.nonzero(~valid, as_tuple=False).flatten()[-count:] if count else valid.new_zeros(0, dtype=torch.long)
    missing = count - invisible.numel()
    return torch.cat([invisible.new_zeros(missing), invisible])


def _new_slots(source: torch.Tensor, merged_at: torch.Tensor, old_length: int) -> torch.Tensor:
    """``[old_length]`` unpadded new slot of every surviving old slot (-1 if dropped).

    Merged slots copy their anchor's slot in ``source``; they are skipped so an
    anchor maps to its own surviving slot.
    """
    own = torch.ones(source.numel(), dtype=torch.bool, device=source.device)
    own[merged_at] = False
    new_of_old = torch.full((old_length,), -1, dtype=torch.long, device=source.device)
    new_of_old[source[own]] = torch.arange(source.numel(), device=source.device)[own]
    return new_of_old


def _carry_members(members: dict[int, list[int]], source: torch.Tensor, pad: int) -> dict[int, list[int]]:
    """Re-key the merged-token membership of surviving MERGED slots to their new slots."""
    if not members:
        return {}
    carried = {}
    for new_slot, old_slot in enumerate(source.tolist()):
        if old_slot in members:
            carried[new_slot + pad] = members[old_slot]
    return carried


def _originals(layout: Layout, row: int, slots: torch.Tensor) -> list[int]:
    """Original vision ordinals represented by ``slots`` (expanding merged slots)."""
    found: list[int] = []
    for slot in slots.tolist():
        if int(layout.kind[row, slot]) == MERGED:
            found.extend(layout.members[row].get(slot, []))
        else:
            found.append(int(layout.ordinal[row, slot]))
    return sorted(set(found))
