"""Performance benchmark: measured prefill/decode speed of pruning against its FLOPs limit.

Every number is a median over interleaved repetitions measured in ONE run:
each repetition times every configuration once (in rotating order), so drift
of the machine hits all configurations alike. Attaching and detaching happen
outside the timed region. ``tokenprune bench --perf`` and
``benchmarks/perf.py`` call :func:`run_perf`.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tokenprune.adapter import Adapter
from tokenprune.errors import BudgetError, ConfigError
from tokenprune.handle import attach
from tokenprune.stats import LayerDims, PruneStats
from tokenprune.timing import collect_times

UNHOOKED = "unpruned (no hooks)"
KEEP_ALL = "keep-all (hooks, nothing dropped)"


@dataclass(frozen=True)
class PerfPlan:
    """What to measure.

    Attributes:
        policies: policies timed at every equivalent-token budget (the CLI
            defaults to every installed policy).
        equivalents: budgets in equivalent vision tokens (mean entering each layer).
        repeats: interleaved repetitions; medians are reported.
        decode_tokens: new tokens timed for decode throughput.
        scaling_images: images per row for the vision-token sweep (batch 1).
        scaling_batches: batch sizes for the batch sweep (one image per row).
        scaling_fraction: kept fraction of the vision tokens in both sweeps.
        scaling_policies: policies timed in the sweeps (empty: :attr:`policies`).
        keep_all_policy: the policy run at ratio 1.0 for the keep-all row,
            the price of the hooks alone (empty: the first of :attr:`policies`).
    """

    policies: tuple[str, ...]
    equivalents: tuple[float, ...] = (192.0, 128.0, 64.0)
    repeats: int = 7
    decode_tokens: int = 32
    scaling_images: tuple[int, ...] = (1, 2, 4, 5)
    scaling_batches: tuple[int, ...] = (1, 4)
    scaling_fraction: float = 0.11
    scaling_policies: tuple[str, ...] = ()
    keep_all_policy: str = ""

    def __post_init__(self) -> None:
        if not self.policies:
            raise ConfigError("name at least one policy to time")
        if not self.scaling_policies:
            object.__setattr__(self, "scaling_policies", self.policies)
        if not self.keep_all_policy:
            object.__setattr__(self, "keep_all_policy", self.policies[0])
        if self.repeats < 1 or self.decode_tokens < 1:
            raise ConfigError("repeats and decode tokens must be at least 1")
        if any(e <= 0 for e in self.equivalents) or not 0 < self.scaling_fraction <= 1:
            raise ConfigError("budgets must be positive; the scaling fraction must be in (0, 1]")
        if any(n < 1 for n in (*self.scaling_images, *self.scaling_batches)):
            raise ConfigError("image counts and batch sizes must be at least 1")


@dataclass
class Timing:
    """One configuration's measurements: seconds per repetition, stats and timed sections of the last run."""

    label: str
    attach_kwargs: dict[str, Any] | None
    seconds: list[float] = field(default_factory=list)
    sections: list[dict[str, float]] = field(default_factory=list)
    stats: PruneStats | None = None
    skipped: str | None = None

    @property
    def median(self) -> float:
        """Median seconds."""
        return statistics.median(self.seconds)

    def section_median(self, name: str) -> float:
        """Median seconds of a timed section (0 where it did not run)."""
        return statistics.median(s.get(name, 0.0) for s in self.sections) if self.sections else 0.0


@dataclass
class PrefillRow:
    """A policy at a budget, against the unpruned prefill."""

    policy: str
    target: float
    timing: Timing
    baseline: float
    ideal_speedup: float | None = None
    achievable_speedup: float | None = None

    @property
    def measured_speedup(self) -> float | None:
        """Unpruned median / pruned median."""
        return None if self.timing.skipped else self.baseline / self.timing.median

    @property
    def efficiency(self) -> float | None:
        """Measured speedup / FLOPs-ideal speedup."""
        if self.measured_speedup is None or not self.ideal_speedup:
            return None
        return self.measured_speedup / self.ideal_speedup

    @property
    def machinery_efficiency(self) -> float | None:
        """Measured speedup / the speedup the unhooked decoder itself shows at the same per-layer token counts."""
        if self.measured_speedup is None or not self.achievable_speedup:
            return None
        return self.measured_speedup / self.achievable_speedup

    def overhead_share(self, sections: Sequence[str] = ("begin_request", "select")) -> float:
        """The policy's own time (default: request set-up + decisions) as a share of unpruned prefill."""
        return sum(self.timing.section_median(s) for s in sections) / self.baseline


@dataclass
class DecodeRow:
    """Decode throughput and KV-cache bytes of one configuration."""

    label: str
    tokens_per_second: float | None
    kv_bytes: int | None
    kv_theoretical: int | None
    skipped: str | None = None


@dataclass
class ScalingRow:
    """Prefill time at one (vision tokens, batch) point."""

    vision_tokens: int
    batch: int
    unpruned: float
    pruned: dict[str, float | None]
    ideal: dict[str, float | None]


@dataclass
class PerfReport:
    """Everything :func:`run_perf` measured."""

    model: str
    machine: str
    vision_tokens: int
    prompt_tokens: int
    layers: int
    unhooked: Timing
    keep_all: Timing
    prefill: list[PrefillRow]
    decode: list[DecodeRow]
    scaling: list[ScalingRow]
    plan: PerfPlan


def machine_description() -> str:
    """CPU/GPU, threads and library versions, for the report."""
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    device = f"{cpu}, {torch.get_num_threads()} torch threads"
    if torch.cuda.is_available():
        device += f"; GPU {torch.cuda.get_device_name(0)}"
    return f"{device}; torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}"


def _seconds(call: Callable[[], Any]) -> float:
    """Wall-clock seconds of ``call()``, queued GPU work included."""
    _synchronize()
    start = time.perf_counter()
    call()
    _synchronize()
    return time.perf_counter() - start


def _interleaved(keys: list[Any], repeats: int, run: Callable[[Any], None]) -> None:
    """``repeats`` rounds over ``keys``, each round starting one key later, so drift hits all alike."""
    for rep in range(repeats):
        shift = rep % len(keys) if keys else 0
        for key in keys[shift:] + keys[:shift]:
            run(key)


def _run_once(model: nn.Module, timing: Timing, call: Callable[[], Any]) -> float:
    handle = attach(model, **timing.attach_kwargs) if timing.attach_kwargs is not None else None
    try:
        with torch.no_grad(), collect_times() as sections:
            elapsed = _seconds(call)
        timing.sections.append(dict(sections))
        if handle is not None:
            timing.stats = handle.stats
        return elapsed
    finally:
        if handle is not None:
            handle.detach()


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def measure(
    model: nn.Module, inputs: dict[str, Any], timings: list[Timing], repeats: int, call: Callable[[], Any] | None = None
) -> None:
    """Warm every configuration up (marking unreachable budgets), then time them interleaved ``repeats`` times."""
    call = call or (lambda: model(**inputs, logits_to_keep=1))
    for timing in timings:
        try:
            _run_once(model, timing, call)
        except BudgetError as exc:
            timing.skipped = str(exc).split(";")[0]
        timing.sections.clear()
    live = [t for t in timings if t.skipped is None]
    _interleaved(live, repeats, lambda timing: timing.seconds.append(_run_once(model, timing, call)))


def decoder_layer_times(
    adapter: Adapter, full_length: int, stats: list[PruneStats], repeats: int
) -> dict[int, float]:
    """Seconds one unhooked decoder layer takes on ``n`` tokens, for every count the runs produced.

    Measured by running the bare text model (no hooks) on ``n`` random
    embeddings and dividing by its depth: what the hardware itself gives at
    that size, fixed per-layer costs and small-matrix efficiency included.
    """
    text_model = adapter.text_model()
    sizes = sorted({full_length, *(n for s in stats for n in s.tokens_per_layer[0])} - {0})
    parameter = next(text_model.parameters())
    width = int(adapter.text_config.hidden_size)
    inputs = {n: torch.randn(1, n, width, dtype=parameter.dtype, device=parameter.device) for n in sizes}
    times: dict[int, list[float]] = {n: [] for n in sizes}

    def run(n: int) -> None:
        times[n].append(_seconds(lambda: text_model(inputs_embeds=inputs[n], use_cache=True)))

    with torch.no_grad():
        for n in sizes:  # warm-up
            text_model(inputs_embeds=inputs[n], use_cache=True)
        _interleaved(sizes, repeats, run)
    return {n: statistics.median(v) / adapter.num_layers for n, v in times.items()}


def achievable_speedup(stats: PruneStats | None, layer_time: dict[int, float]) -> float | None:
    """Unhooked decoder time on the full prompt / on the kept counts, from :func:`decoder_layer_times`."""
    if stats is None:
        return None
    counts = stats.tokens_per_layer[0]
    full = layer_time[max(counts)] * len(counts) if max(counts) in layer_time else None
    pruned = sum(layer_time[n] for n in counts)
    return full / pruned if full and pruned else None


def ideal_speedup(stats: PruneStats | None) -> float | None:
    """FLOPs-ideal prefill speedup: decoder multiply-adds unpruned / pruned (overhead excluded)."""
    if stats is None or not stats.flops.pruned:
        return None
    return stats.flops.baseline / stats.flops.pruned


def theoretical_kv_bytes(stats: PruneStats, dims: LayerDims, element_size: int) -> int:
    """Cache bytes the kept counts imply: per layer, the widest row's visible tokens × batch × K and V."""
    per_layer = [max(row[layer] for row in stats.tokens_per_layer) for layer in range(stats.num_layers)]
    return sum(per_layer) * stats.batch_size * 2 * dims.kv_heads * dims.head_dim * element_size


def _budget_kwargs(policy: str, equivalent: float) -> dict[str, Any]:
    return {"policy": policy, "equivalent": equivalent}


def run_perf(
    model: nn.Module,
    scaled_inputs: Callable[[nn.Module, int, int], dict[str, Any]],
    plan: PerfPlan,
    model_name: str,
    progress: Callable[[str], None] = lambda label: None,
) -> PerfReport:
    """Measure prefill, overhead, decode and scaling for ``model`` (see :class:`PerfPlan`)."""
    inputs = scaled_inputs(model, 1, 1)
    keep_all = Timing(KEEP_ALL, {"policy": plan.keep_all_policy, "ratio": 1.0})
    with attach(model, **keep_all.attach_kwargs) as handle:  # type: ignore[arg-type]
        adapter = handle.adapter  # stays usable after detach: it only reads the model
    dims = LayerDims.from_config(adapter.text_config)

    progress("prefill")
    unhooked = Timing(UNHOOKED, None)
    budget_timings = [
        Timing(f"{policy}@{equivalent:g}", _budget_kwargs(policy, equivalent))
        for equivalent in plan.equivalents for policy in plan.policies
    ]
    measure(model, inputs, [unhooked, keep_all, *budget_timings], plan.repeats)
    baseline = unhooked.median
    vision_tokens = keep_all.stats.vision_tokens[0] if keep_all.stats else 0
    progress("decoder time per token count")
    full_length = int(inputs["input_ids"].shape[1])
    layer_time = decoder_layer_times(adapter, full_length, [t.stats for t in budget_timings if t.stats], plan.repeats)
    rows = []
    for timing in budget_timings:
        policy, equivalent = timing.label.rsplit("@", 1)
        rows.append(PrefillRow(
            policy, float(equivalent), timing, baseline, ideal_speedup(timing.stats),
            achievable_speedup(timing.stats, layer_time),
        ))

    progress("decode")
    smallest = min(plan.equivalents)
    decode_configs = [Timing(UNHOOKED, None)] + [
        Timing(policy, _budget_kwargs(policy, smallest)) for policy in plan.policies
    ]
    short = [Timing(t.label, t.attach_kwargs) for t in decode_configs]
    steps = plan.decode_tokens

    def generate(new_tokens: int) -> Callable[[], Any]:
        return lambda: model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)

    measure(model, inputs, decode_configs, plan.repeats, generate(steps + 1))
    measure(model, inputs, short, plan.repeats, generate(1))
    element_size = next(model.parameters()).element_size()
    decode = []
    for long_run, short_run in zip(decode_configs, short):
        if long_run.skipped or short_run.skipped:
            decode.append(DecodeRow(long_run.label, None, None, None, long_run.skipped or short_run.skipped))
            continue
        rate = steps / max(long_run.median - short_run.median, 1e-9)
        stats = short_run.stats if short_run.attach_kwargs is not None else keep_all.stats
        kv = stats.kv_cache.pruned_bytes if stats and stats.kv_cache else None
        kv_theory = theoretical_kv_bytes(stats, dims, element_size) if stats else None
        decode.append(DecodeRow(long_run.label, rate, kv, kv_theory))

    scaling = []
    points = [(images, 1) for images in plan.scaling_images] + [(1, b) for b in plan.scaling_batches if b != 1]
    for images, batch in points:
        progress(f"scaling: {images} image(s), batch {batch}")
        point_inputs = scaled_inputs(model, batch, images)
        vision = vision_tokens * images
        plain = Timing(UNHOOKED, None)
        pruned = [Timing(p, _budget_kwargs(p, plan.scaling_fraction * vision)) for p in plan.scaling_policies]
        measure(model, point_inputs, [plain, *pruned], max(1, plan.repeats // 2 + 1))
        scaling.append(ScalingRow(
            vision_tokens=vision, batch=batch, unpruned=plain.median,
            pruned={t.label: None if t.skipped else t.median for t in pruned},
            ideal={t.label: ideal_speedup(t.stats) for t in pruned},
        ))
    return PerfReport(
        model=model_name, machine=machine_description(), vision_tokens=vision_tokens,
        prompt_tokens=int(inputs["input_ids"].shape[1]) - vision_tokens, layers=adapter.num_layers,
        unhooked=unhooked, keep_all=keep_all, prefill=rows, decode=decode, scaling=scaling, plan=plan,
    )
