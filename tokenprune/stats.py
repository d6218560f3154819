"""Per-request statistics: token counts per layer, FLOPs, KV-cache bytes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class LayerDims:
    """Sizes of one decoder layer, for FLOPs accounting."""

    hidden_size: int
    intermediate_size: int
    heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def from_config(cls, config: Any) -> LayerDims:
        """Read the sizes from a transformers decoder config."""
        heads = int(config.num_attention_heads)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(
            hidden_size=int(config.hidden_size),
            intermediate_size=int(getattr(config, "intermediate_size", 4 * config.hidden_size)),
            heads=heads,
            kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
            head_dim=int(head_dim),
        )

    def layer_macs(self, n: int) -> float:
        """Multiply-adds of one decoder layer on ``n`` tokens at prefill.

        q/k/v/o projections ``n·D·d·(2H + 2H_kv)``, attention scores and values
        ``2·n²·H·d`` (full square, as the paper counts), gated FFN ``3·n·D·m``.
        FLOPs are twice these numbers.
        """
        d, h, hkv, hd, m = self.hidden_size, self.heads, self.kv_heads, self.head_dim, self.intermediate_size
        return float(n * d * hd * (2 * h + 2 * hkv) + 2 * n * n * h * hd + 3 * n * d * m)


@dataclass
class PruneRecord:
    """What one pruning layer did.

    Attributes:
        layer: first decoder layer that saw the reduced set.
        vision_before / vision_after: vision tokens per row before and after.
        kept: per row, ORIGINAL vision indices of surviving un-merged tokens.
        merged: per row, per merged token, the ORIGINAL vision indices it stands for.
    """

    layer: int
    vision_before: list[int]
    vision_after: list[int]
    kept: list[list[int]]
    merged: list[list[list[int]]]


@dataclass
class FlopsReport:
    """Prefill compute of the decoder layers, in multiply-adds (×2 for FLOPs)."""

    baseline: float
    pruned: float
    overhead: dict[str, float] = field(default_factory=dict)

    @property
    def overhead_total(self) -> float:
        """The policy's and engine's own compute."""
        return float(sum(self.overhead.values()))

    @property
    def ratio(self) -> float:
        """(pruned + overhead) / baseline."""
        return (self.pruned + self.overhead_total) / self.baseline if self.baseline else 1.0


@dataclass
class KVCacheReport:
    """KV-cache size after prefill (tensor bytes, fillers included)."""

    baseline_bytes: int
    pruned_bytes: int
    lengths: list[int]


@dataclass
class PruneStats:
    """Statistics of the last request through an attached model.

    Attributes:
        policy / budget / layers / num_layers: the attachment.
        pruned: False when the request had no vision token (passed through).
        vision_tokens: per row, vision tokens at the decoder input.
        vision_per_layer: per row, vision tokens ENTERING each decoder layer
            (merged tokens count).
        tokens_per_layer: per row, visible tokens entering each decoder layer.
        records: one :class:`PruneRecord` per pruning layer.
        equivalent_tokens: per row, mean of ``vision_per_layer`` (layer inputs).
        equivalent_tokens_post_prune: per row, the authors' convention: the
            layer that scores counts its post-prune size (understates cost).
        flops: prefill multiply-adds, baseline vs pruned, overhead separate.
        kv_cache: cache bytes after prefill (None without a cache).
        output_origin: ``[B, N_out]`` original position of each output slot
            (-1 for fillers and merged tokens); maps pruned logits back.
        decode_steps: decode forwards that reused the pruned cache.
    """

    policy: str
    budget: str
    layers: tuple[int, ...]
    num_layers: int
    pruned: bool
    vision_tokens: list[int]
    vision_per_layer: list[list[int]]
    tokens_per_layer: list[list[int]]
    records: list[PruneRecord]
    equivalent_tokens: list[float]
    equivalent_tokens_post_prune: list[float]
    flops: FlopsReport
    kv_cache: KVCacheReport | None
    output_origin: torch.Tensor
    decode_steps: int = 0

    @property
    def batch_size(self) -> int:
        """Rows."""
        return len(self.vision_tokens)

    def kept_indices(self, layer: int | None = None) -> list[list[int]]:
        """Per row, original vision indices kept at pruning ``layer`` (default: the last)."""
        if not self.records:
            return [list(range(n)) for n in self.vision_tokens]
        record = self.records[-1] if layer is None else next(r for r in self.records if r.layer == layer)
        return record.kept

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tensors become lists)."""
        data = asdict(self)
        data["layers"] = list(self.layers)
        data["output_origin"] = self.output_origin.tolist()
        data["flops"]["overhead_total"] = self.flops.overhead_total
        data["flops"]["unit"] = "multiply-adds"
        return data


def equivalent(counts: list[int]) -> float:
    """Mean of per-layer counts."""
    return sum(counts) / len(counts) if counts else 0.0


def post_prune_counts(per_layer: list[int], layers: tuple[int, ...]) -> list[int]:
    """Per-layer counts where each scoring layer (``L-1``) counts the size after its prune."""
    counts = list(per_layer)
    for layer in layers:
        counts[layer - 1] = per_layer[layer]
    return counts
