"""SparseVLM as a recipe of four named, swappable steps (plugin shell).

Each step is a registered :class:`tokenprune.Step` whose function is a thin
shell over the pure tensor functions of :mod:`.steps`:

==========  ===================  =====================================================
kind        name                 role
==========  ===================  =====================================================
rater       ``sparsevlm``        eq. 5-7: text tokens relevant to the image rate it
rater       ``all_text``         every text token after the image rates it
rater       ``last``             the prompt's last token rates it (FastV's query)
scorer      ``rater_attention``  eq. 1-4: mean rater→vision attention of layer L-1
budget      ``rank``             eq. 8: delete ⌊λ·(L_v − rank P)⌋; last layer lands the budget
budget      ``schedule``         fixed counts shaped like the published LLaVA-1.5 schedules
recycler    ``dpc_knn``          eq. 9-11: cluster the top-τ deleted tokens, merge each cluster
recycler    ``none``             drop deleted tokens
==========  ===================  =====================================================

Step signatures (all per row):

* rater: ``(request, row, options) -> LongTensor`` ORIGINAL positions of raters;
* scorer: ``(ctx, row, rater_slots, options) -> (scores [n], probs [n_r, n])``;
* budget: ``(ctx, row, scores, probs, options, history) -> int`` vision tokens
  (kept + merged) entering the next layer; ``history`` lists the row's counts
  after earlier pruning layers;
* recycler: ``(ctx, row, scores, total, options) -> RowSelection`` keeping
  ``total`` vision tokens in all.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, field_validator

import tokenprune
from tokenprune.policies.sparsevlm import steps as pure

#: Published LLaVA-1.5 schedules (576 vision tokens, pruning after layers 2, 6, 15):
#: authors' target -> vision tokens kept after each pruning layer.
PUBLISHED_SCHEDULES: dict[int, tuple[int, int, int]] = {
    192: (300, 200, 110),
    128: (303, 110, 36),
    96: (238, 48, 26),
    64: (66, 30, 17),
}
PUBLISHED_VISION_TOKENS = 576


class SparseVLMOptions(tokenprune.PolicyOptions):
    """Options of the SparseVLM policies (paper preset defaults)."""

    rater: str = Field("sparsevlm", description="rater step: sparsevlm | all_text | last | a plugin's")
    scaled_relevance: bool = Field(False, description="divide the rater relevance logits by sqrt(D)")
    scorer: str = Field("rater_attention", description="scorer step")
    budget: str = Field("rank", description="budget step: rank | schedule | a plugin's")
    scale: float = Field(1.0, ge=0.0, description="rank mode: λ in N_del = floor(λ·(L_v − rank))")
    bias: float = Field(0.0, description="rank mode: extra tokens kept (authors' first-release bias)")
    rank_rtol: float | None = Field(None, gt=0.0, description="rank mode: matrix_rank tolerance (None: torch default)")
    schedule_weights: tuple[float, ...] | None = Field(
        None,
        description="schedule mode: shape w_i in [0,1] per pruning layer, last 0 (None: nearest published schedule)",
    )
    recycler: str = Field("dpc_knn", description="recycler step: dpc_knn | none | a plugin's")
    tau: float = Field(0.3, ge=0.0, le=1.0, description="recycling: share of deleted tokens recycled (top by score)")
    per_cluster: int = Field(10, ge=1, description="recycling: clusters = floor(recycled / per_cluster) + 1")
    knn: int | None = Field(None, ge=1, description="recycling: neighbours for density (None: number of clusters)")
    merge: Literal["mean", "sum"] = Field("mean", description="recycling: merge a cluster by mean (reference) or sum (paper)")

    @field_validator("schedule_weights")
    @classmethod
    def _weights_shape(cls, weights: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if weights is None:
            return None
        if any(not 0.0 <= w <= 1.0 for w in weights) or weights[-1] != 0.0:
            raise ValueError("schedule_weights must lie in [0, 1] and end with 0")
        if list(weights) != sorted(weights, reverse=True):
            raise ValueError("schedule_weights must be non-increasing")
        return weights


class ReferenceOptions(SparseVLMOptions):
    """Options of the ``sparsevlm-reference`` preset: fixed schedules, recycling on."""

    budget: str = Field("schedule", description="budget step: schedule | rank | a plugin's")


# ---------------------------------------------------------------- rater steps
def raters_sparsevlm(request: tokenprune.RequestContext, row: int, options: SparseVLMOptions) -> torch.Tensor:
    """Eq. 5-7: text tokens whose relevance to the image is above the mean."""
    text = request.text_positions(row)
    if text.numel() == 0:
        return text
    embeds = request.inputs_embeds[row]
    vision = embeds[request.vision_positions(row)]
    relevance = pure.rater_relevance(vision, embeds[text], scaled=options.scaled_relevance)
    request.add_overhead_flops("rater relevance", vision.shape[0] * text.numel() * embeds.shape[-1])
    return text[pure.select_raters(relevance)]


def raters_all_text(request: tokenprune.RequestContext, row: int, options: SparseVLMOptions) -> torch.Tensor:
    """Every text token after the image."""
    return request.text_positions(row)


def raters_last(request: tokenprune.RequestContext, row: int, options: SparseVLMOptions) -> torch.Tensor:
    """The last visible token of the prompt."""
    visible = torch.nonzero(request.attention_mask[row], as_tuple=False).flatten()
    return visible[-1:]


# --------------------------------------------------------------- scorer steps
def score_rater_attention(
    ctx: tokenprune.LayerContext, row: int, rater_slots: torch.Tensor, options: SparseVLMOptions
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1-4: P = head-averaged rater→vision attention of layer L-1; s = mean over raters."""
    probs = ctx.attention_to_vision(row, rater_slots)
    return pure.significance(probs), probs


# --------------------------------------------------------------- budget steps
def budget_rank(
    ctx: tokenprune.LayerContext,
    row: int,
    scores: torch.Tensor,
    probs: torch.Tensor,
    options: SparseVLMOptions,
    history: list[int],
) -> int:
    """Eq. 8 at intermediate layers; the last pruning layer lands the user's budget.

    An intermediate layer keeps ``L_v − ⌊λ·(L_v − rank P)⌋`` tokens but never
    fewer than the final count of the flattest plan (for ``keep``/``ratio``
    the budget's final count); it skips when nothing is to be deleted. The last layer keeps exactly what the budget asks, given what
    the earlier layers actually kept.
    """
    n = int(scores.numel())
    request = ctx.request
    if ctx.stage < len(request.layers) - 1:
        n_del = pure.rank_deletions(probs, options.scale, options.bias, options.rank_rtol)
        n_raters = int(probs.shape[0])
        request.add_overhead_flops("rank (SVD)", n_raters * n * min(n_raters, n))
        # the flattest plan (every stage at the final count) is the lowest an intermediate layer may go
        flat = request.planned_counts(row, (0.0,) * len(request.layers))[-1]
        return max(n - n_del, min(n, flat))
    return min(n, _final_count(request, row, history))


def budget_schedule(
    ctx: tokenprune.LayerContext,
    row: int,
    scores: torch.Tensor,
    probs: torch.Tensor,
    options: SparseVLMOptions,
    history: list[int],
) -> int:
    """Fixed counts per pruning layer, shaped like the published schedules, meeting the budget."""
    request = ctx.request
    weights = options.schedule_weights or published_weights(request, row)
    if weights is not None and len(weights) != len(request.layers):
        weights = None  # a shape for another number of layers: fall back to linear
    return min(int(scores.numel()), request.planned_counts(row, weights)[ctx.stage])


def _final_count(request: tokenprune.RequestContext, row: int, history: list[int]) -> int:
    """Count after the last pruning layer that meets the budget given the earlier stages."""
    if request.budget.kind != "equivalent":
        return request.budget.final_keep(request.n_vision(row))
    layers, depth, n = request.layers, request.num_layers, request.n_vision(row)
    spans = [b - a for a, b in zip(layers, [*layers[1:], depth])]
    known = layers[0] * n + sum(count * span for count, span in zip(history, spans[:-1]))
    return max(1, min(n, round((request.budget.value * depth - known) / spans[-1])))


def published_weights(request: tokenprune.RequestContext, row: int) -> tuple[float, ...] | None:
    """Shape of the published schedule whose final share is nearest this row's budget.

    With ``keep`` equal to a published final count on 576 tokens the planned
    counts reproduce that schedule exactly, e.g. keep=17 → (66, 30, 17).
    """
    if len(request.layers) != 3:
        return None
    n = request.n_vision(row)
    best, best_gap = None, math.inf
    for counts in PUBLISHED_SCHEDULES.values():
        weights = schedule_shape(counts, PUBLISHED_VISION_TOKENS)
        final = request.planned_counts(row, weights)[-1]
        gap = abs(final / n - counts[-1] / PUBLISHED_VISION_TOKENS)
        if gap < best_gap:
            best, best_gap = weights, gap
    return best


def schedule_shape(counts: tuple[int, ...], n_vision: int) -> tuple[float, ...]:
    """Weights ``w_i = (c_i − c_last) / (n − c_last)`` of a schedule of kept counts."""
    last = counts[-1]
    return tuple((c - last) / (n_vision - last) for c in counts)


# ------------------------------------------------------------- recycler steps
def recycle_none(
    ctx: tokenprune.LayerContext, row: int, scores: torch.Tensor, total: int, options: SparseVLMOptions
) -> tokenprune.RowSelection:
    """Keep the ``total`` highest-scoring tokens; drop the rest."""
    return tokenprune.RowSelection(keep=pure.top_k_in_order(scores, total), scores=scores)


def recycle_dpc_knn(
    ctx: tokenprune.LayerContext, row: int, scores: torch.Tensor, total: int, options: SparseVLMOptions
) -> tokenprune.RowSelection:
    """Eq. 9-11: keep the top tokens and merge clusters of the best deleted ones, ``total`` in all.

    Merged tokens count against ``total``. Their features are the layer's
    input hidden states (layer L-1's output), each cluster is merged by mean or
    sum, and a merged token takes the rotary position of its highest-scoring
    member.
    """
    n = int(scores.numel())
    n_plain = _plain_count(n, total, options)
    keep = pure.top_k_in_order(scores, n_plain)
    deleted_mask = torch.ones(n, dtype=torch.bool, device=scores.device)
    deleted_mask[keep] = False
    deleted = torch.nonzero(deleted_mask, as_tuple=False).flatten()
    n_clusters = total - n_plain
    if deleted.numel() == 0 or n_clusters <= 0:
        return tokenprune.RowSelection(keep=keep, scores=scores)
    candidates = deleted[pure.recycle_candidates(scores[deleted], options.tau)]
    features = ctx.vision_hidden(row)[candidates].float()
    labels = pure.dpc_knn(features, n_clusters, options.knn)
    merged = pure.merge_clusters(features, labels, n_clusters, options.merge)
    anchors = candidates[pure.cluster_anchor(labels, scores[candidates], n_clusters)]
    members = [candidates[labels == c] for c in range(n_clusters)]
    ctx.request.add_overhead_flops("recycling (DPC-KNN)", candidates.numel() ** 2 * features.shape[-1])
    return tokenprune.RowSelection(
        keep=keep, merged_hidden=merged, merged_anchor=anchors, merged_members=members, scores=scores
    )


def _plain_count(n: int, total: int, options: SparseVLMOptions) -> int:
    """Tokens kept as they are, so that kept + clusters of the rest = ``total``."""
    if total >= n:
        return n
    plain = total
    for _ in range(8):  # clusters depend on the deleted count; settles in a few steps
        deleted = n - plain
        recycled = min(deleted, math.floor(options.tau * deleted + 1e-9) + 1)
        clusters = min(pure.cluster_count(recycled, options.per_cluster), total - 1 if total > 1 else 0)
        new_plain = max(total - clusters, 1 if total >= 1 else 0)
        if new_plain == plain:
            break
        plain = new_plain
    return plain


STEPS = [
    tokenprune.Step("rater", "sparsevlm", raters_sparsevlm, "eq. 5-7 relevance-selected text tokens", ("scaled_relevance",)),
    tokenprune.Step("rater", "all_text", raters_all_text, "every text token after the image"),
    tokenprune.Step("rater", "last", raters_last, "the prompt's last token"),
    tokenprune.Step("scorer", "rater_attention", score_rater_attention, "eq. 1-4 mean rater->vision attention"),
    tokenprune.Step("budget", "rank", budget_rank, "eq. 8 rank-based deletions", ("scale", "bias", "rank_rtol")),
    tokenprune.Step("budget", "schedule", budget_schedule, "published-shape fixed schedule", ("schedule_weights",)),
    tokenprune.Step("recycler", "dpc_knn", recycle_dpc_knn, "eq. 9-11 DPC-KNN recycling", ("tau", "per_cluster", "knn", "merge")),
    tokenprune.Step("recycler", "none", recycle_none, "drop deleted tokens"),
]


class SparseVLMPolicy(tokenprune.Policy):
    """SparseVLM, paper preset: relevance raters, rank budget, DPC-KNN recycling.

    Default pruning layers (3, 7, 16) are the paper's scoring layers (2, 6, 15)
    in tokenprune's convention (a pruning layer is the first layer that sees the
    reduced set), for a 32-layer decoder; scaled for other depths.
    """

    name = "sparsevlm"
    description = "SparseVLM (paper): text raters, rank-based budget, token recycling"
    Options = SparseVLMOptions
    default_layers = (3, 7, 16)

    def __init__(self, options: tokenprune.PolicyOptions, config: tokenprune.PruneConfig) -> None:
        super().__init__(options, config)
        opts = self.options
        self.rater = tokenprune.get_step("rater", opts.rater)
        self.scorer = tokenprune.get_step("scorer", opts.scorer)
        self.budget = tokenprune.get_step("budget", opts.budget)
        self.recycler = tokenprune.get_step("recycler", opts.recycler)

    def begin_request(self, request: tokenprune.RequestContext) -> None:
        """Choose each row's raters once (pure function of the input embeddings)."""
        request.memo["raters"] = [
            self.rater(request, row, self.options) if request.n_vision(row) else None
            for row in range(request.batch_size)
        ]
        request.query_positions.update({row: r for row, r in enumerate(request.memo["raters"]) if r is not None})
        request.memo["history"] = [[] for _ in range(request.batch_size)]

    def select_row(self, ctx: tokenprune.LayerContext, row: int) -> tokenprune.RowSelection:
        """Score with the raters, size the cut with the budget step, finish with the recycler."""
        raters = ctx.request.memo["raters"][row]
        history = ctx.request.memo["history"][row]
        rater_slots = ctx.slots_of_positions(row, raters)
        scores, probs = self.scorer(ctx, row, rater_slots, self.options)
        total = int(self.budget(ctx, row, scores, probs, self.options, list(history)))
        history.append(total)
        if total >= scores.numel():  # nothing to delete: the layer is skipped
            return tokenprune.RowSelection(keep=torch.arange(scores.numel(), device=scores.device), scores=scores)
        return self.recycler(ctx, row, scores, total, self.options)


class SparseVLMReferencePolicy(SparseVLMPolicy):
    """SparseVLM, authors' later releases: fixed schedules (published shapes) and recycling."""

    name = "sparsevlm-reference"
    description = "SparseVLM (reference code): fixed published-shape schedules, token recycling"
    Options = ReferenceOptions


@tokenprune.hookimpl
def tokenprune_policies() -> list[type[tokenprune.Policy]]:
    """Register both SparseVLM presets."""
    return [SparseVLMPolicy, SparseVLMReferencePolicy]


@tokenprune.hookimpl
def tokenprune_steps() -> list[tokenprune.Step]:
    """Register SparseVLM's steps so other policies and plugins can reuse or replace them."""
    return STEPS
