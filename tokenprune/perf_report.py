"""Markdown tables, targets and the plot of a :class:`tokenprune.perf.PerfReport`."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from tokenprune.perf import PerfReport, Timing

#: the targets the benchmark is judged against (see docs/benchmarks.md)
TARGET_EFFICIENCY = 0.85  # measured speedup / FLOPs-ideal speedup at the smallest budget
TARGET_OVERHEAD = 0.03  # policy time / unpruned prefill time
TARGET_KEEP_ALL = 0.01  # keep-all through the hooks vs the unhooked model

POLICY_SECTIONS = ("begin_request", "select")


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.1f}"


def _x(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def prefill_table(report: PerfReport) -> str:
    """Policy × budget: time, speedups, efficiency, policy and engine overhead."""
    lines = [
        "| policy | budget (equiv.) | achieved equiv. | vision tokens entering each layer | prefill ms | "
        "measured speedup | FLOPs-ideal | measured / ideal | unhooked decoder at these counts | measured / that | "
        "policy overhead | engine (gather, masks) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {report.unhooked.label} | all ({report.vision_tokens}) | {report.vision_tokens} | — | "
        f"{_ms(report.unhooked.median)} | 1.00× | 1.00× | — | 1.00× | — | — | — |",
    ]
    keep = report.keep_all
    lines.append(
        f"| {keep.label} | all | {report.vision_tokens} | — | {_ms(keep.median)} | "
        f"{_x(report.unhooked.median / keep.median)} | 1.00× | — | 1.00× | — | {_pct(_share(keep, report))} | "
        f"{_pct(keep.section_median('prune') / report.unhooked.median)} |"
    )
    for row in report.prefill:
        if row.timing.skipped:
            lines.append(f"| {row.policy} | {row.target:g} | not reachable: {row.timing.skipped} |" + " |" * 9)
            continue
        stats = row.timing.stats
        achieved = stats.equivalent_tokens[0] if stats else float("nan")
        counts = _compress(stats.vision_per_layer[0]) if stats else "—"
        lines.append(
            f"| {row.policy} | {row.target:g} | {achieved:.1f} | {counts} | {_ms(row.timing.median)} | "
            f"{_x(row.measured_speedup)} | {_x(row.ideal_speedup)} | {_pct(row.efficiency)} | "
            f"{_x(row.achievable_speedup)} | {_pct(row.machinery_efficiency)} | "
            f"{_pct(row.overhead_share(POLICY_SECTIONS))} | {_pct(row.overhead_share(('prune',)))} |"
        )
    return "\n".join(lines)


def _share(timing: Timing, report: PerfReport) -> float:
    return sum(timing.section_median(s) for s in POLICY_SECTIONS) / report.unhooked.median


def _compress(counts: list[int]) -> str:
    """``[616, 616, 200, 200]`` -> ``616×2, 200×2``."""
    parts: list[str] = []
    run_value, run_length = counts[0], 0
    for value in [*counts, None]:
        if value == run_value:
            run_length += 1
            continue
        parts.append(f"{run_value}×{run_length}" if run_length > 1 else str(run_value))
        run_value, run_length = value, 1
    return ", ".join(parts)


def overhead_table(report: PerfReport) -> str:
    """Per policy at the smallest budget: every timed section as a share of unpruned prefill."""
    smallest = min(report.plan.equivalents)
    rows = [r for r in report.prefill if r.target == smallest and not r.timing.skipped]
    names = sorted({name for r in rows for s in r.timing.sections for name in s} - {"prune"})
    lines = [
        f"| policy (at {smallest:g} equiv.) | " + " | ".join(f"`{n}`" for n in names) + " | policy total |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for row in rows:
        cells = [_pct(row.timing.section_median(n) / row.baseline) if any(n in s for s in row.timing.sections) else "—" for n in names]
        lines.append(f"| {row.policy} | " + " | ".join(cells) + f" | {_pct(row.overhead_share(POLICY_SECTIONS))} |")
    return "\n".join(lines)


def decode_table(report: PerfReport) -> str:
    """Decode tokens/s and KV-cache bytes measured vs implied by the kept counts."""
    smallest = min(report.plan.equivalents)
    base = next((d.tokens_per_second for d in report.decode if d.label == report.unhooked.label), None)
    lines = [
        f"| configuration (pruned at {smallest:g} equiv.) | decode tokens/s ({report.plan.decode_tokens} new) | "
        "speedup | KV-cache bytes | bytes the kept counts imply | equal |",
        "|---|---|---|---|---|---|",
    ]
    for d in report.decode:
        if d.skipped:
            lines.append(f"| {d.label} | not reachable: {d.skipped} | | | | |")
            continue
        speed = None if not base or d.tokens_per_second is None else d.tokens_per_second / base
        equal = "yes" if d.kv_bytes is not None and d.kv_bytes == d.kv_theoretical else "NO"
        lines.append(
            f"| {d.label} | {d.tokens_per_second:.1f} | {_x(speed)} | {d.kv_bytes:,} | {d.kv_theoretical:,} | {equal} |"
        )
    return "\n".join(lines)


def scaling_table(report: PerfReport) -> str:
    """Prefill time vs vision tokens and batch size, unpruned and at the scaling fraction."""
    policies = list(report.plan.scaling_policies)
    header = " | ".join(f"{p} ms | {p} speedup (ideal)" for p in policies)
    lines = [
        f"| vision tokens per row | batch | unpruned ms | {header} |",
        "|---|---|---|" + "---|---|" * len(policies),
    ]
    for row in report.scaling:
        cells = []
        for p in policies:
            pruned = row.pruned.get(p)
            speed = None if pruned is None else row.unpruned / pruned
            cells += [_ms(pruned), f"{_x(speed)} ({_x(row.ideal.get(p))})"]
        lines.append(f"| {row.vision_tokens} | {row.batch} | {_ms(row.unpruned)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(report: PerfReport) -> list[tuple[str, bool, str]]:
    """``(target, met, measured)`` for each target of the benchmark."""
    smallest = min(report.plan.equivalents)
    at_smallest = [r for r in report.prefill if r.target == smallest and not r.timing.skipped]
    worst_efficiency = min((r.efficiency for r in at_smallest if r.efficiency is not None), default=None)
    overhead = [r.overhead_share(POLICY_SECTIONS) for r in report.prefill if not r.timing.skipped]
    keep_all = report.keep_all.median / report.unhooked.median - 1
    kv_equal = all(d.kv_bytes == d.kv_theoretical for d in report.decode if not d.skipped)
    return [
        (f"prefill speedup ≥ {TARGET_EFFICIENCY:.0%} of FLOPs-ideal for every policy at {smallest:g} equiv.",
         worst_efficiency is not None and worst_efficiency >= TARGET_EFFICIENCY, f"worst {_pct(worst_efficiency)}"),
        (f"policy overhead ≤ {TARGET_OVERHEAD:.0%} of unpruned prefill ({report.vision_tokens} vision tokens)",
         bool(overhead) and max(overhead) <= TARGET_OVERHEAD, f"worst {_pct(max(overhead, default=None))}"),
        ("KV-cache bytes equal to the kept counts' figure", kv_equal, "all equal" if kv_equal else "mismatch"),
        (f"keep-all through the hooks ≤ {TARGET_KEEP_ALL:.0%} over the unhooked model",
         keep_all <= TARGET_KEEP_ALL, f"{keep_all:+.1%}"),
    ]


def markdown_section(report: PerfReport, command: str, plot: str | None, markdown_path: str) -> str:
    """The generated section: provenance, targets, the four tables, the plot."""
    plan = report.plan
    lines = [
        f"Generated by `{command}` on {report.model}: {report.vision_tokens} vision tokens per image, "
        f"{report.prompt_tokens} text tokens, {report.layers} decoder layers, batch 1 unless stated. "
        f"Machine: {report.machine}. Medians of {plan.repeats} interleaved repetitions (sweeps: "
        f"{max(1, plan.repeats // 2 + 1)}), measured in one run; attach/detach outside the timed region. "
        "FLOPs-ideal speedup = decoder multiply-adds unpruned / pruned (the policy's own work excluded); "
        "policy overhead = the policy's request set-up and decisions (steps and attention probe included) as a share "
        "of the unpruned prefill; engine = gathering, layouts and mask rebuilding.",
        "",
        "| target | met | measured |",
        "|---|---|---|",
        *(f"| {name} | {'yes' if met else 'NO'} | {measured} |" for name, met, measured in targets(report)),
        "",
        "Prefill:",
        "",
        prefill_table(report),
        "",
    ]
    if plot:
        relative = os.path.relpath(plot, os.path.dirname(os.path.abspath(markdown_path)) or ".")
        lines += [f"![measured and FLOPs-ideal prefill speedup vs equivalent tokens]({relative})", ""]
    lines += [
        "Policy time by timed section (share of unpruned prefill):",
        "",
        overhead_table(report),
        "",
        "Decode and KV cache:",
        "",
        decode_table(report),
        "",
        f"Scaling (kept {plan.scaling_fraction:.0%} of the vision tokens, matched on equivalent tokens):",
        "",
        scaling_table(report),
    ]
    return "\n".join(lines)


def speedup_series(report: PerfReport) -> dict[str, list[tuple[float, float]]]:
    """Per policy, (budget in equivalent tokens, measured speedup); plus two references, medians over policies.

    "FLOPs-ideal" is the multiply-add ratio; "unhooked decoder at kept counts"
    is what the bare decoder itself runs at with those per-layer token counts.
    """
    series: dict[str, list[tuple[float, float]]] = {}
    ideal: dict[float, list[float]] = {}
    achievable: dict[float, list[float]] = {}
    for row in report.prefill:
        if row.timing.skipped or row.measured_speedup is None:
            continue
        series.setdefault(row.policy, []).append((row.target, row.measured_speedup))
        if row.ideal_speedup:
            ideal.setdefault(row.target, []).append(row.ideal_speedup)
        if row.achievable_speedup:
            achievable.setdefault(row.target, []).append(row.achievable_speedup)
    series["FLOPs-ideal"] = [(t, statistics.median(v)) for t, v in sorted(ideal.items())]
    series["unhooked decoder at kept counts"] = [(t, statistics.median(v)) for t, v in sorted(achievable.items())]
    return series


def write_plot(report: PerfReport, path: str | Path) -> None:
    """PNG: measured prefill speedup per policy and the FLOPs-ideal speedup, vs equivalent tokens."""
    from tokenprune.plot import line_chart

    series = speedup_series(report)
    top = max((y for line in series.values() for _, y in line), default=1.0)
    line_chart(
        series, path, title=f"{report.model}: prefill speedup vs equivalent vision tokens",
        x_label="budget: equivalent vision tokens (mean entering each decoder layer)", y_label="speedup over unpruned",
        y_range=(0.0, top * 1.1),
    )
