"""The pruning engine: forward hooks that prune vision tokens mid-decoder.

Hooks (all ``register_forward_pre_hook(..., with_kwargs=True)`` unless noted):

* the top module: refuses ``labels`` on a pruned request;
* the multimodal module: remembers ``input_ids`` (the last place token ids
  exist) to find vision tokens;
* the text model: starts a request at prefill (the first pruning layer's cache
  is empty) or a decode step; a forward hook closes the prefill (statistics);
* every decoder layer from the first pruning layer on: at a pruning layer, asks
  the policy for a selection and gathers hidden states, rotary ``(cos, sin)``
  and position ids (ORIGINAL positions are kept, never renumbered), then swaps
  in the mask of the pruned space; at other layers, swaps the stage's tensors;
* the attention module of each layer before a pruning layer: keeps its inputs
  (prefill only) so policies can ask for attention rows (see :mod:`probe`).

The KV cache needs no special handling: layers before a pruning layer cache
``N`` tokens, later ones ``N'``; decode steps rebuild each stage's mask from
its saved 2-D visibility plus the new tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from tokenprune.adapter import Adapter, LayerCall, gather_sequence, repeat_heads
from tokenprune.context import LayerContext, RequestContext
from tokenprune.errors import TokenpruneError, UnsupportedInputError
from tokenprune.events import PruneEvent
from tokenprune.layout import MERGED, Layout, apply_selections
from tokenprune.probe import attention_rows, probe_macs
from tokenprune.selection import RowSelection
from tokenprune.timing import timed
from tokenprune.stats import (
    FlopsReport,
    KVCacheReport,
    LayerDims,
    PruneRecord,
    PruneStats,
    equivalent,
    post_prune_counts,
)

if TYPE_CHECKING:
    import pluggy

    from tokenprune.config import PruneConfig
    from tokenprune.policy import Policy


@dataclass
class Stage:
    """Tensors shared by the decoder layers from one pruning layer to the next."""

    layer: int
    layout: Layout
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None
    position_ids: torch.Tensor | None
    mask: Any
    key_bias: torch.Tensor | None


@dataclass
class RequestState:
    """Per-request state, owned by the engine (never global)."""

    request: RequestContext
    base: Layout
    prefill_length: int
    stages: list[Stage] = field(default_factory=list)
    in_prefill: bool = True
    captured: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)
    step_mask: torch.Tensor | None = None
    step_masks: dict[int, Any] = field(default_factory=dict)
    records: list[PruneRecord] = field(default_factory=list)
    cache: Any = None


class Engine:
    """Installs and removes the hooks of one attachment and runs its requests."""

    def __init__(
        self,
        model: nn.Module,
        adapter: Adapter,
        policy: Policy,
        config: PruneConfig,
        layers: tuple[int, ...],
        manager: pluggy.PluginManager,
        owner: Any,
    ) -> None:
        self.model = model
        self.adapter = adapter
        self.policy = policy
        self.config = config
        self.layers = layers
        self.manager = manager
        self.owner = owner
        self.num_layers = adapter.num_layers
        self.dims = LayerDims.from_config(adapter.text_config)
        self.state: RequestState | None = None
        self.stats: PruneStats | None = None
        self._handles: list[RemovableHandle] = []
        self._pending: tuple[torch.Tensor | None, dict[str, Any]] | None = None

    # ---------------------------------------------------------------- lifecycle
    def install(self) -> None:
        """Register every hook; on any failure, remove those already registered."""
        try:
            adapter = self.adapter
            self._handles.extend(adapter.install_hooks(self.layers))
            self._pre(adapter.top_module(), self._on_top)
            self._pre(adapter.multimodal_module(), self._on_multimodal)
            text_model = adapter.text_model()
            self._pre(text_model, self._on_text_model)
            self._handles.append(text_model.register_forward_hook(self._after_text_model, with_kwargs=True))
            layers = adapter.decoder_layers()
            for index in range(self.layers[0], self.num_layers):
                self._pre(layers[index], partial(self._on_layer, index))
            for layer in self.layers:
                attention = adapter.attention_module(layers[layer - 1])
                self._pre(attention, partial(self._capture_attention_input, layer - 1))
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        """Remove every hook and drop all per-request state."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.state = None
        self._pending = None

    def _pre(self, module: nn.Module, hook: Any) -> None:
        self._handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    # -------------------------------------------------------------------- hooks
    def _on_top(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if kwargs.get("labels") is None:
            return None
        ids = kwargs.get("input_ids", args[0] if args else None)
        if isinstance(ids, torch.Tensor) and bool(self.adapter.vision_mask(ids).any()):
            raise UnsupportedInputError(
                "labels cannot be used with a pruned forward: outputs after the pruning layer have "
                "fewer positions than labels; detach the handle to compute a loss"
            )
        return None

    def _on_multimodal(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._pending = (self.adapter.request_input_ids(args, kwargs), kwargs)
        return None

    def _on_text_model(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        pending, self._pending = self._pending, None
        ids, call_kwargs = pending if pending is not None else (None, {})
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            embeds = args[0] if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 3 else None
        mask = kwargs.get("attention_mask")
        if cache is None or self.adapter.cache_length(cache, self.layers[0]) == 0:
            self._start_request(ids, embeds, mask, cache, call_kwargs)
        else:
            self._start_decode_step(ids, embeds, mask, cache)
        return None

    def _after_text_model(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        state = self.state
        if state is None:
            return None
        if state.in_prefill:
            state.in_prefill = False
            state.captured.clear()
            state.cache = None
            cache = getattr(output, "cache", None) or getattr(output, "past_key_values", None)
            if cache is None:
                cache = kwargs.get("cache", kwargs.get("past_key_values"))
            self.stats = self._prefill_stats(state, self.adapter.cache_tensors(cache))
            self.manager.hook.tokenprune_request_end(stats=self.stats, handle=self.owner)
        elif self.stats is not None:
            self.stats.decode_steps += 1
        state.step_masks.clear()
        return None

    def _capture_attention_input(self, index: int, module: nn.Module, args: tuple, kwargs: dict) -> None:
        state = self.state
        if state is None or not state.in_prefill:
            return None
        state.captured[index] = self.adapter.attention_inputs(module, args, kwargs)
        return None

    def _on_layer(self, index: int, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        state = self.state
        if state is None:
            return None
        call = self.adapter.read_layer_call(args, kwargs)
        if state.in_prefill:
            if len(state.stages) < len(self.layers) and index == self.layers[len(state.stages)]:
                self._prune(state, index, call, call.cache)
            stage = state.stages[-1]
            call.attention_mask = stage.mask
            call.position_embeddings = stage.position_embeddings
            call.position_ids = stage.position_ids
        else:
            stage_index = max(i for i, layer in enumerate(self.layers) if layer <= index)
            if stage_index not in state.step_masks:
                state.step_masks[stage_index] = self._decode_mask(state, stage_index, call.hidden_states, call.cache)
            call.attention_mask = state.step_masks[stage_index]
        return self.adapter.write_layer_call(args, kwargs, call)

    # ----------------------------------------------------------------- requests
    def _start_request(
        self,
        ids: torch.Tensor | None,
        embeds: torch.Tensor | None,
        mask: Any,
        cache: Any,
        call_kwargs: dict[str, Any],
    ) -> None:
        self.state = None
        if ids is None:
            raise UnsupportedInputError(
                "tokenprune finds vision tokens from input_ids; call the model with input_ids "
                "(not inputs_embeds)"
            )
        if embeds is None:
            raise UnsupportedInputError("the text model was called without inputs_embeds")
        vision = self.adapter.vision_mask(ids)
        if not bool(vision.any()):
            self.stats = self._passthrough_stats(ids, mask)
            return
        self.adapter.check_cache(cache)
        attention_mask = _two_d_mask(mask, ids)
        for row in range(ids.shape[0]):
            self.config.budget.check_fits(int(vision[row].sum()))
        request = RequestContext(
            input_ids=ids,
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            vision_mask=vision,
            budget=self.config.budget,
            layers=self.layers,
            num_layers=self.num_layers,
            grids=self.adapter.vision_grids(ids, call_kwargs),
        )
        state = RequestState(request=request, base=Layout.initial(vision, attention_mask), prefill_length=ids.shape[1])
        with torch.no_grad(), timed("begin_request"):
            self.policy.begin_request(request)
        self.state = state

    def _start_decode_step(self, ids: torch.Tensor | None, embeds: torch.Tensor | None, mask: Any, cache: Any) -> None:
        if ids is not None and bool(self.adapter.vision_mask(ids).any()):
            raise UnsupportedInputError(
                "vision tokens after the prefill are not supported: start a new request for a new image"
            )
        state = self.state
        lengths = {self.adapter.cache_length(cache, layer) for layer in (0, *self.layers)}
        if state is None or state.in_prefill:
            self.state = None
            if len(lengths) > 1:
                raise UnsupportedInputError(
                    "this cache was pruned by a request tokenprune no longer tracks (it failed or "
                    "belongs to another attachment); start a new request with a fresh cache"
                )
            return
        q_len = embeds.shape[1] if embeds is not None else ids.shape[1]  # type: ignore[union-attr]
        total = self.adapter.cache_length(cache, 0) + q_len
        step = torch.ones(state.base.batch_size, total, dtype=torch.bool, device=state.base.valid.device)
        if isinstance(mask, torch.Tensor):
            if mask.dim() != 2 or mask.shape[1] != total:
                raise UnsupportedInputError(
                    f"decode steps need a 2-D attention_mask covering cache and new tokens ({total})"
                )
            step = mask.bool().to(step.device)
        state.step_mask = step

    def _decode_mask(self, state: RequestState, stage_index: int, hidden: torch.Tensor, cache: Any) -> Any:
        stage = state.stages[stage_index]
        new_part = state.step_mask[:, state.prefill_length :]  # type: ignore[index]
        mask_2d = torch.cat([stage.layout.valid, new_part], dim=1)
        expected = self.adapter.cache_length(cache, stage.layer) + hidden.shape[1]
        if mask_2d.shape[1] != expected:
            raise UnsupportedInputError(
                f"KV cache of layer {stage.layer} holds {expected - hidden.shape[1]} tokens but the "
                f"request state expects {mask_2d.shape[1] - hidden.shape[1]}; the cache was modified "
                "outside tokenprune"
            )
        bias = None
        if stage.key_bias is not None:
            bias = torch.cat([stage.key_bias, torch.zeros_like(new_part, dtype=stage.key_bias.dtype)], dim=1)
        return self._mask(hidden, mask_2d, cache, stage.layer, bias)

    def _mask(self, hidden: torch.Tensor, mask_2d: torch.Tensor, cache: Any, layer: int, bias: torch.Tensor | None) -> Any:
        if bias is None:
            return self.adapter.build_mask(hidden, mask_2d, cache, layer)
        return with_key_bias(self.adapter, hidden, mask_2d, cache, layer, bias)

    # ------------------------------------------------------------------ pruning
    def _prune(self, state: RequestState, index: int, call: LayerCall, cache: Any) -> None:
        state.cache = cache  # the scored layer's keys are already in it
        previous = state.stages[-1] if state.stages else None
        layout = previous.layout if previous else state.base
        position_embeddings = previous.position_embeddings if previous else call.position_embeddings
        position_ids = previous.position_ids if previous else call.position_ids
        bias_before = previous.key_bias if previous else None
        hidden = call.hidden_states
        ctx = LayerContext(
            request=state.request,
            layer=index,
            stage=len(state.stages),
            hidden_states=hidden,
            layout=layout,
            _attention=partial(self._attention_rows, state, index - 1, layout, bias_before),
            _keys=partial(self._keys, state, index - 1),
        )
        with torch.no_grad(), timed("select"):
            selections = self.policy.select(ctx)
        with timed("prune"):
            self._apply(state, index, call, cache, ctx, selections, layout, position_embeddings, position_ids)

    def _apply(
        self,
        state: RequestState,
        index: int,
        call: LayerCall,
        cache: Any,
        ctx: LayerContext,
        selections: list[RowSelection],
        layout: Layout,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None,
        position_ids: torch.Tensor | None,
    ) -> None:
        hidden = ctx.hidden_states
        self._check_selections(selections, layout, hidden.shape[-1])

        transition = apply_selections(layout, selections)
        new = transition.layout
        hidden = gather_sequence(hidden, transition.source, dim=-2)
        for row, override in enumerate(transition.overrides):
            if override is not None:
                slots, values = override
                hidden[row, slots] = values.to(hidden.dtype)
        call.hidden_states = hidden
        if position_embeddings is not None:
            position_embeddings = self.adapter.gather_position_embeddings(position_embeddings, transition.source)
        if position_ids is not None:
            position_ids = self.adapter.gather_position_ids(position_ids, transition.source)
        key_bias = None
        if self.policy.proportional_attention and bool((new.size != 1).any()):
            key_bias = torch.where(new.valid, new.size.log(), torch.zeros_like(new.size))
        mask = self._mask(hidden, new.valid, cache, index, key_bias)
        state.stages.append(Stage(index, new, position_embeddings, position_ids, mask, key_bias))

        record = PruneRecord(
            layer=index,
            vision_before=layout.vision_count(),
            vision_after=new.vision_count(),
            kept=[new.kept_ordinals(b) for b in range(new.batch_size)],
            merged=[new.merged_groups(b) for b in range(new.batch_size)],
        )
        state.records.append(record)
        event = PruneEvent(
            policy=self.policy.name,
            record=record,
            scores=[s.scores for s in selections],
            entering_ordinals=[layout.ordinal[b, layout.vision_slots(b)] for b in range(layout.batch_size)],
            request=state.request,
        )
        self.manager.hook.tokenprune_after_prune(event=event)

    def _check_selections(self, selections: list[RowSelection], layout: Layout, hidden_size: int) -> None:
        if len(selections) != layout.batch_size:
            raise TokenpruneError(
                f"policy {self.policy.name!r} returned {len(selections)} selections for "
                f"{layout.batch_size} rows"
            )
        for row, selection in enumerate(selections):
            try:
                selection.validate(int(layout.vision_slots(row).numel()), hidden_size)
            except ValueError as exc:
                raise TokenpruneError(f"policy {self.policy.name!r}, row {row}: {exc}") from None

    def _attention_rows(
        self,
        state: RequestState,
        scored_layer: int,
        layout: Layout,
        key_bias: torch.Tensor | None,
        row: int,
        query_slots: torch.Tensor,
        per_head: bool,
    ) -> torch.Tensor:
        hidden, (cos, sin) = state.captured[scored_layer]
        attention = self.adapter.attention_module(self.adapter.decoder_layers()[scored_layer])
        pick = min(row, cos.shape[0] - 1)
        with timed("probe"):
            keys = self._cached_keys(state, scored_layer, row, hidden.shape[1])
            probs = attention_rows(
                self.adapter,
                attention,
                hidden[row],
                (cos[pick], sin[pick]),
                layout.valid[row],
                query_slots,
                None if key_bias is None else key_bias[row],
                keys,
            )
        d = self.dims
        state.request.add_overhead_flops(
            "attention probe",
            probe_macs(len(query_slots), hidden.shape[1], d.hidden_size, d.heads, d.kv_heads, d.head_dim, keys is not None),
        )
        return probs if per_head else probs.mean(dim=0)

    def _cached_keys(self, state: RequestState, layer: int, row: int, length: int) -> torch.Tensor | None:
        """``[H_kv, N, d]`` keys the model cached for ``layer`` in this prefill, or None without a cache."""
        tensors = self.adapter.cache_tensors(state.cache) if state.cache is not None else None
        if not tensors or layer >= len(tensors):
            return None
        keys = tensors[layer][0]
        if keys.shape[-2] != length:  # not this prefill's keys alone: recompute
            return None
        return keys[min(row, keys.shape[0] - 1)]

    def _keys(self, state: RequestState, scored_layer: int, row: int) -> torch.Tensor:
        hidden, (cos, sin) = state.captured[scored_layer]
        attention = self.adapter.attention_module(self.adapter.decoder_layers()[scored_layer])
        pick = min(row, cos.shape[0] - 1)
        keys = self._cached_keys(state, scored_layer, row, hidden.shape[1])
        if keys is None:
            keys = self.adapter.keys(attention, hidden[row], (cos[pick], sin[pick]))
        return repeat_heads(keys, attention.q_proj.out_features // attention.head_dim)

    # -------------------------------------------------------------- statistics
    def _prefill_stats(
        self, state: RequestState, cache: list[tuple[torch.Tensor, torch.Tensor]] | None
    ) -> PruneStats:
        base = state.base
        batch = base.batch_size
        vision_in = base.vision_count()
        tokens_in = base.token_count()
        vision_per_layer, tokens_per_layer = [], []
        for row in range(batch):
            vision_row, tokens_row = [], []
            for layer in range(self.num_layers):
                stage = next((s for s in reversed(state.stages) if s.layer <= layer), None)
                layout = stage.layout if stage else base
                vision_row.append(layout.vision_count()[row])
                tokens_row.append(layout.token_count()[row])
            vision_per_layer.append(vision_row)
            tokens_per_layer.append(tokens_row)
        baseline = sum(self.dims.layer_macs(tokens_in[row]) * self.num_layers for row in range(batch))
        pruned = sum(self.dims.layer_macs(n) for row in tokens_per_layer for n in row)
        final = state.stages[-1].layout if state.stages else base
        origin = torch.where(final.kind == MERGED, -1, final.origin)
        return PruneStats(
            policy=self.policy.name,
            budget=self.config.budget.describe(),
            layers=self.layers,
            num_layers=self.num_layers,
            pruned=True,
            vision_tokens=vision_in,
            vision_per_layer=vision_per_layer,
            tokens_per_layer=tokens_per_layer,
            records=state.records,
            equivalent_tokens=[equivalent(row) for row in vision_per_layer],
            equivalent_tokens_post_prune=[
                equivalent(post_prune_counts(row, self.layers)) for row in vision_per_layer
            ],
            flops=FlopsReport(baseline=baseline, pruned=pruned, overhead=dict(state.request.overhead_flops)),
            kv_cache=_kv_report(cache, self.num_layers),
            output_origin=origin.cpu(),
        )

    def _passthrough_stats(self, ids: torch.Tensor, mask: Any) -> PruneStats:
        batch, n = ids.shape
        tokens = _two_d_mask(mask, ids).sum(-1).tolist() if isinstance(mask, torch.Tensor) and mask.dim() == 2 else [n] * batch
        macs = sum(self.dims.layer_macs(int(t)) * self.num_layers for t in tokens)
        return PruneStats(
            policy=self.policy.name,
            budget=self.config.budget.describe(),
            layers=self.layers,
            num_layers=self.num_layers,
            pruned=False,
            vision_tokens=[0] * batch,
            vision_per_layer=[[0] * self.num_layers for _ in range(batch)],
            tokens_per_layer=[[int(t)] * self.num_layers for t in tokens],
            records=[],
            equivalent_tokens=[0.0] * batch,
            equivalent_tokens_post_prune=[0.0] * batch,
            flops=FlopsReport(baseline=macs, pruned=macs),
            kv_cache=None,
            output_origin=torch.arange(n).expand(batch, n).clone(),
        )


def with_key_bias(
    adapter: Adapter, hidden: torch.Tensor, mask_2d: torch.Tensor, cache: Any, layer: int, bias: torch.Tensor
) -> torch.Tensor:
    """An additive float mask that also adds ``bias[b, key]`` to every visible key's logit.

    Used for proportional attention (``log(size)``); works on sdpa and eager.
    """
    batch, q_len = hidden.shape[:2]
    kv_len = mask_2d.shape[1]
    keys = torch.arange(kv_len, device=hidden.device)
    queries = torch.arange(kv_len - q_len, kv_len, device=hidden.device)
    visible = (keys[None, :] <= queries[:, None])[None] & mask_2d.bool()[:, None, :]
    low = torch.finfo(hidden.dtype).min
    mask = torch.where(visible, bias.to(hidden.dtype)[:, None, :], torch.tensor(low, dtype=hidden.dtype, device=hidden.device))
    return mask[:, None, :, :]


def _two_d_mask(mask: Any, ids: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return torch.ones_like(ids, dtype=torch.bool)
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise UnsupportedInputError(
            "pass a 2-D attention_mask [batch, sequence]; pre-built 4-D or per-layer masks cannot "
            "be pruned"
        )
    return mask.bool()


def _kv_report(cache: list[tuple[torch.Tensor, torch.Tensor]] | None, num_layers: int) -> KVCacheReport | None:
    if cache is None:
        return None
    lengths, pruned, baseline = [], 0, 0
    full = None
    for keys, values in cache[:num_layers]:
        lengths.append(int(keys.shape[-2]))
        pruned += keys.numel() * keys.element_size() + values.numel() * values.element_size()
        if full is None:
            full = keys.shape[-2]
        baseline += (keys.numel() * keys.element_size() + values.numel() * values.element_size()) * full // max(
            1, keys.shape[-2]
        )
    return KVCacheReport(baseline_bytes=int(baseline), pruned_bytes=int(pruned), lengths=lengths)
