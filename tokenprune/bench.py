"""Accuracy benchmark: policies x budgets on a registered dataset, side by side in one run.

Budgets are fractions of the request's vision tokens matched on EQUIVALENT
tokens (vision tokens entering each decoder layer, averaged), i.e. on prefill
cost, so late-pruning methods are not flattered. A budget a policy cannot
reach (e.g. ToMe's 50%-per-layer limit) is reported as not reachable, with
the reason, never silently replaced.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tokenprune.errors import BudgetError
from tokenprune.handle import attach
from tokenprune.models import DatasetSpec

UNPRUNED = "unpruned"


@dataclass
class AccuracyResult:
    """One (policy, budget) cell of the benchmark."""

    policy: str
    fraction: float | None
    equivalent_target: float | None
    accuracy: float | None = None
    by_kind: dict[str, float] = field(default_factory=dict)
    equivalent_tokens: float | None = None
    flops_ratio: float | None = None
    seconds: float = 0.0
    skipped: str | None = None

    def retention(self, baseline: float) -> float | None:
        """Accuracy relative to the unpruned model."""
        return None if self.accuracy is None or not baseline else self.accuracy / baseline


def evaluate_accuracy(
    model: nn.Module, dataset: DatasetSpec, examples: list[Any], batch_size: int, stats_sink: list | None = None,
    handle: Any = None,
) -> tuple[float, dict[str, float]]:
    """Overall and per-kind accuracy of the model as it is (attached or not)."""
    flags: list[bool] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        with torch.no_grad():
            flags.extend(dataset.evaluate(model, chunk))
        if stats_sink is not None and handle is not None and handle.stats is not None:
            stats_sink.append(handle.stats)
    by_kind: dict[str, list[bool]] = {}
    for example, flag in zip(examples, flags):
        by_kind.setdefault(dataset.kind(example), []).append(flag)
    return sum(flags) / len(flags), {k: sum(v) / len(v) for k, v in sorted(by_kind.items())}


def run_accuracy(
    model: nn.Module,
    dataset: DatasetSpec,
    policies: Sequence[str],
    fractions: Sequence[float],
    n: int,
    batch_size: int = 100,
    progress: Callable[[str], None] | None = None,
) -> list[AccuracyResult]:
    """The unpruned model and every ``policy`` at every budget ``fraction`` (of vision tokens)."""
    examples = dataset.load(n)
    results = []
    started = time.perf_counter()
    accuracy, by_kind = evaluate_accuracy(model, dataset, examples, batch_size)
    results.append(AccuracyResult(UNPRUNED, None, None, accuracy, by_kind, float(dataset.vision_tokens), 1.0,
                                  time.perf_counter() - started))
    if progress:
        progress(UNPRUNED)
    for policy in policies:
        for fraction in fractions:
            target = fraction * dataset.vision_tokens
            result = AccuracyResult(policy, fraction, target)
            started = time.perf_counter()
            try:
                stats: list = []
                with attach(model, policy=policy, equivalent=target) as handle:
                    result.accuracy, result.by_kind = evaluate_accuracy(model, dataset, examples, batch_size, stats, handle)
                rows = [(eq, s.flops.ratio) for s in stats for eq in s.equivalent_tokens]
                result.equivalent_tokens = sum(eq for eq, _ in rows) / len(rows)
                result.flops_ratio = sum(s.flops.ratio for s in stats) / len(stats)
            except BudgetError as exc:
                result.skipped = str(exc).split(";")[0]
            result.seconds = time.perf_counter() - started
            results.append(result)
            if progress:
                progress(f"{policy} @ {fraction:.0%}")
    return results


def markdown_table(results: list[AccuracyResult], kinds: Sequence[str]) -> str:
    """Markdown: accuracy, retention vs unpruned, gap to random, per-kind accuracy."""
    baseline = next(r for r in results if r.policy == UNPRUNED).accuracy or 0.0
    random_at = {r.fraction: r.accuracy for r in results if r.policy == "random"}
    header = ["policy", "budget (equiv. tokens)", "achieved equiv.", "accuracy", "retention", "vs random", *kinds, "prefill FLOPs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        if r.skipped:
            lines.append(f"| {r.policy} | {r.fraction:.0%} ({r.equivalent_target:.1f}) | not reachable: {r.skipped} |" + " |" * (len(header) - 3))
            continue
        budget = "all" if r.fraction is None else f"{r.fraction:.0%} ({r.equivalent_target:.1f})"
        rand = random_at.get(r.fraction)
        versus = "" if rand is None or r.fraction is None or r.policy == "random" else f"{(r.accuracy or 0) - rand:+.3f}"
        cells = [
            r.policy, budget, f"{r.equivalent_tokens:.1f}", f"{r.accuracy:.3f}", f"{r.retention(baseline):.1%}", versus,
            *(f"{r.by_kind.get(k, float('nan')):.3f}" for k in kinds), f"{r.flops_ratio:.1%}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def retention_series(results: list[AccuracyResult]) -> dict[str, list[tuple[float, float]]]:
    """Per policy, (achieved equivalent tokens, retention) points; unpruned as a reference point."""
    baseline = next(r for r in results if r.policy == UNPRUNED)
    series: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        if r.policy == UNPRUNED or r.skipped or r.accuracy is None:
            continue
        series.setdefault(r.policy, []).append((round(r.equivalent_tokens or 0.0, 1), r.retention(baseline.accuracy or 1.0) or 0.0))
    series[UNPRUNED] = [(float(baseline.equivalent_tokens or 0.0), 1.0)]
    return series


def write_csv(results: list[AccuracyResult], kinds: Sequence[str], path: str) -> None:
    """One row per (policy, budget) with accuracy, retention, per-kind accuracy, cost and time."""
    import csv

    baseline = next(r for r in results if r.policy == UNPRUNED).accuracy or 0.0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["policy", "fraction", "equivalent_target", "equivalent_achieved", "accuracy", "retention",
                         *kinds, "flops_ratio", "seconds", "skipped"])
        for r in results:
            writer.writerow([r.policy, r.fraction, r.equivalent_target, r.equivalent_tokens, r.accuracy, r.retention(baseline),
                             *(r.by_kind.get(k) for k in kinds), r.flops_ratio, round(r.seconds, 3), r.skipped or ""])


def markdown_section(
    results: list[AccuracyResult], kinds: Sequence[str], model: str, dataset: DatasetSpec, n: int, command: str,
    plot: str | None, markdown_path: str,
) -> str:
    """The generated Markdown section: provenance, table, plot, best policy per budget."""
    import os

    baseline = next(r for r in results if r.policy == UNPRUNED)
    lines = [
        f"Generated by `{command}` on {dataset.name} ({n} questions of its fixed split) with {model}; "
        f"unpruned accuracy {baseline.accuracy:.3f} with {dataset.vision_tokens} vision tokens. "
        "Budgets are fractions of the vision tokens matched on equivalent tokens (vision tokens entering each "
        "decoder layer, averaged over layers); \"achieved\" is what the stats measured. Policy options are the "
        "published defaults, scaled to the decoder's depth. \"vs random\" is the accuracy difference to the "
        "random policy at the same budget.",
        "",
        markdown_table(results, kinds),
        "",
    ]
    if plot:
        relative = os.path.relpath(plot, os.path.dirname(os.path.abspath(markdown_path)) or ".")
        lines += [f"![accuracy retention vs equivalent tokens]({relative})", ""]
    for fraction in sorted({r.fraction for r in results if r.fraction is not None}, reverse=True):
        cell = [r for r in results if r.fraction == fraction and r.accuracy is not None]
        if cell:
            best = max(cell, key=lambda r: r.accuracy or 0.0)
            lines.append(f"- at {fraction:.0%}: best is **{best.policy}** ({best.accuracy:.3f}, "
                         f"{best.retention(baseline.accuracy or 1.0):.1%} of unpruned)")
    return "\n".join(lines)


def write_section(path: str, name: str, body: str) -> None:
    """Replace (or append) the block between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``path``."""
    from pathlib import Path

    file = Path(path)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = file.read_text(encoding="utf-8") if file.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    file.write_text(text, encoding="utf-8")
