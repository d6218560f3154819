"""The ``tokenprune`` command line.

Commands: ``run`` (one request, unpruned and pruned side by side), ``bench``
(accuracy of policies x budgets), ``visualize`` (which patches survive),
``policies``, ``adapters`` and ``models`` (what is installed).
Errors the user can fix print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

import tokenprune
from tokenprune.config import PruneConfig
from tokenprune.errors import ConfigError, TokenpruneError

EXIT_USAGE = 2

RUN_EPILOG = """examples:
  tokenprune run
  tokenprune run --policy fastv --ratio 0.25
  tokenprune run --image photo.png --prompt "What is shown?" --model ./llava-1.5-7b-hf --keep 64
  tokenprune run --config prune.toml --option tau=0.5 --json
"""


BENCH_EPILOG = """examples:
  tokenprune bench
  tokenprune bench --n 200 --policies random,sparsevlm --budgets 0.5,0.25
  tokenprune bench --markdown docs/benchmarks.md --plot docs/benchmark_accuracy.png
  tokenprune bench --perf --markdown docs/benchmarks.md --plot docs/benchmark_speed.png
  tokenprune bench --perf --policies fastv,sparsevlm --equivalents 128,64 --repeats 3
"""


VISUALIZE_EPILOG = """examples:
  tokenprune visualize --out pruned.png
  tokenprune visualize --policy sparsevlm --ratio 0.2 --out sparsevlm.png
  tokenprune visualize --image scene.png --prompt "what colour is the circle ?" --out scene-pruned.png
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    _quiet_transformers()
    try:
        return int(args.func(args) or 0)
    except TokenpruneError as exc:
        print(f"tokenprune: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _quiet_transformers() -> None:
    """Keep stderr for our own one-line errors: no weight-loading progress bars or info logs."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokenprune", description="Prune visual tokens inside a VLM's decoder.")
    parser.add_argument("--version", action="version", version=f"tokenprune {tokenprune.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="one request, unpruned and pruned side by side",
        description=(
            "Run one request (image(s) + prompt) unpruned and pruned side by side and report what happened. "
            "With no arguments: the shipped model on its shipped sample image and question."
        ),
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_request_arguments(run)
    _add_config_arguments(run)
    run.add_argument("--max-new-tokens", type=int, default=8, help="tokens to generate (default 8)")
    run.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    run.set_defaults(func=_run)

    bench = commands.add_parser(
        "bench",
        help="accuracy (default) or speed (--perf) of policies x budgets",
        description=(
            "Evaluate the unpruned model and each policy at each budget (fractions of the vision tokens, "
            "matched on equivalent tokens) on a registered dataset, side by side in one run. With --perf, "
            "time prefill, policy overhead, decode and scaling instead (interleaved repetitions, medians) "
            "on a model registered with scaled inputs (default: the one registered as the timing default)."
        ),
        epilog=BENCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument(
        "--model",
        help="registered model name or checkpoint directory (default: the shipped model; with --perf, the timing model)",
    )
    bench.add_argument("--dataset", help="registered dataset name or a JSONL file (default: the model's dataset)")
    bench.add_argument("--n", type=int, default=1000, help="examples from the fixed split (default 1000)")
    bench.add_argument("--policies", help="comma-separated (default: every installed policy)")
    bench.add_argument("--budgets", default="0.67,0.6,0.5,0.33,0.25,0.2", help="comma-separated fractions of vision tokens")
    bench.add_argument("--batch-size", type=int, default=100)
    bench.add_argument("--markdown", help="write the results section into this Markdown file (e.g. docs/benchmarks.md)")
    bench.add_argument("--plot", help="write the retention plot PNG here")
    bench.add_argument("--csv", help="also write the results as CSV here")
    bench.add_argument("--json", action="store_true", help="print machine-readable JSON")
    perf = bench.add_argument_group("speed (--perf)")
    perf.add_argument("--perf", action="store_true", help="measure speed instead of accuracy")
    perf.add_argument("--equivalents", default="192,128,64", help="budgets in equivalent vision tokens (default 192,128,64)")
    perf.add_argument("--repeats", type=int, default=7, help="interleaved repetitions per configuration (default 7)")
    perf.add_argument("--decode-tokens", type=int, default=32, help="new tokens timed for decode throughput (default 32)")
    perf.add_argument("--scaling-images", default="1,2,4,5", help="images per row in the vision-token sweep")
    perf.add_argument("--scaling-batches", default="1,4", help="batch sizes in the batch sweep")
    perf.add_argument("--scaling-fraction", type=float, default=0.11, help="kept fraction in the sweeps (default 0.11)")
    perf.add_argument("--scaling-policies", help="policies timed in the sweeps (default: those of --policies)")
    perf.add_argument("--keep-all-policy", help="policy run at ratio 1.0 for the keep-all row (default: the first of --policies)")
    bench.set_defaults(func=_bench)

    visualize = commands.add_parser(
        "visualize",
        help="PNG of which image patches survive at each pruning layer",
        description=(
            "Prune one request and draw, per pruning layer, the kept patches (unchanged), the dropped ones "
            "(dimmed) and the recycled clusters (outlined); the prompt tokens that drove the choice are "
            "highlighted in the caption."
        ),
        epilog=VISUALIZE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_request_arguments(visualize)
    _add_config_arguments(visualize)
    visualize.add_argument("--out", required=True, help="PNG file to write")
    visualize.add_argument("--image-index", type=int, default=0, help="which image of the request to draw")
    visualize.set_defaults(func=_visualize)

    for name, func, text in (
        ("policies", _list_policies, "list installed policies and their options"),
        ("adapters", _list_adapters, "list installed adapters and the model classes they handle"),
        ("models", _list_models, "list models plugins can build offline"),
    ):
        sub = commands.add_parser(name, help=text, description=text.capitalize() + ".")
        sub.add_argument("--json", action="store_true", help="print JSON")
        sub.set_defaults(func=func)
    return parser


def _add_request_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="registered model name, local checkpoint directory, or hub id (default: the shipped model)")
    parser.add_argument("--image", action="append", default=[], help="image file (repeatable)")
    parser.add_argument("--prompt", help="the question or instruction")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--dtype", default="float32", help="float32 | float16 | bfloat16 (default float32)")


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", help="policy name (default: sparsevlm)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--keep", type=int, help="vision tokens kept after the last pruning layer")
    budget.add_argument("--ratio", type=float, help="fraction of vision tokens kept")
    budget.add_argument("--equivalent", type=float, help="average vision tokens entering each layer")
    parser.add_argument("--layers", help="comma-separated pruning layers, e.g. 2,6,15 (default: the policy's)")
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE",
        help="policy option (repeatable); values are parsed as JSON when possible",
    )
    parser.add_argument("--config", help="TOML or YAML file with the same keys; flags override it")


def config_from_args(args: argparse.Namespace, default_ratio: float = 0.25) -> PruneConfig:
    """Build and validate a :class:`PruneConfig` from CLI arguments."""
    options = {}
    for item in args.option:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option needs KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    layers = None
    if args.layers:
        try:
            layers = tuple(int(x) for x in args.layers.split(","))
        except ValueError:
            raise ConfigError(f"--layers takes comma-separated integers, got {args.layers!r}") from None
    fields: dict[str, Any] = {
        "policy": args.policy, "keep": args.keep, "ratio": args.ratio, "equivalent": args.equivalent,
        "layers": layers, "options": options or None,
    }
    if args.config:
        return PruneConfig.from_file(args.config, **fields)
    fields = {k: v for k, v in fields.items() if v is not None}
    fields.setdefault("policy", "sparsevlm")
    if not any(k in fields for k in ("keep", "ratio", "equivalent")):
        fields["ratio"] = default_ratio
    return PruneConfig.build(**fields)


def _median_time(fn: Any, repeats: int = 3) -> float:
    return sorted(_timed(fn)[1] for _ in range(repeats))[repeats // 2]


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    with torch.no_grad():
        result = fn()
    return result, time.perf_counter() - start


def request_inputs(args: argparse.Namespace, loaded: Any) -> tuple[dict[str, Any], str]:
    """Inputs for the request the arguments describe, and a description of it."""
    from tokenprune.runner import build_inputs, open_images

    spec, processor = loaded.spec, loaded.processor
    if args.image or args.prompt:
        if processor is None:
            raise ConfigError(f"model {loaded.name!r} has no processor; run it without --image/--prompt")
        if not args.prompt:
            raise ConfigError("--image needs a --prompt")
        return build_inputs(processor, open_images(args.image), args.prompt), args.prompt
    if spec is not None and spec.sample_images and processor is not None:
        images = open_images([str(p) for p in spec.sample_images])
        return build_inputs(processor, images, spec.sample_prompt or ""), f"{spec.sample_prompt} (shipped sample)"
    if spec is not None:
        return spec.sample_inputs(loaded.model, 1), "the model's sample request"
    raise ConfigError("give --image and --prompt for a checkpoint directory")


def _run(args: argparse.Namespace) -> int:
    from tokenprune.runner import load_model, open_images

    if args.max_new_tokens < 1:
        raise ConfigError("--max-new-tokens must be at least 1")
    config = config_from_args(args)
    tokenprune.get_policy(config.policy)
    open_images(args.image)  # fail on a bad image before loading a model
    loaded = load_model(args.model, args.device, args.dtype)
    model = loaded.model
    inputs, request = request_inputs(args, loaded)
    inputs = {k: v.to(args.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    generate = dict(max_new_tokens=args.max_new_tokens, do_sample=False)

    _timed(lambda: model(**inputs))  # warm-up: first calls pay one-time costs
    base_prefill = _median_time(lambda: model(**inputs))
    base_out, base_total = _timed(lambda: model.generate(**inputs, **generate))
    with tokenprune.attach(model, config=config) as handle:
        pruned_prefill = _median_time(lambda: model(**inputs))
        pruned_out, pruned_total = _timed(lambda: model.generate(**inputs, **generate))
        stats = handle.stats
    assert stats is not None
    n = inputs["input_ids"].shape[1]
    tokenizer = getattr(loaded.processor, "tokenizer", None)

    def answer(ids: torch.Tensor) -> str | list[int]:
        return tokenizer.decode(ids, skip_special_tokens=True).strip() if tokenizer is not None else ids.tolist()

    report = {
        "model": loaded.name,
        "request": request,
        "config": config.model_dump(),
        "layers": list(stats.layers),
        "answer": {"unpruned": answer(base_out[0, n:]), "pruned": answer(pruned_out[0, n:])},
        "stats": stats.to_dict(),
        "timing_seconds": {
            "prefill": {"unpruned": base_prefill, "pruned": pruned_prefill},
            "generate": {"unpruned": base_total, "pruned": pruned_total},
        },
        "new_tokens": {"unpruned": int(base_out.shape[1] - n), "pruned": int(pruned_out.shape[1] - n)},
    }
    if args.json:
        print(json.dumps(report))
        return 0
    _print_run(config, stats, report)
    return 0


def _print_run(config: PruneConfig, stats: tokenprune.PruneStats, report: dict) -> None:
    console = Console()
    console.print(f"[bold]model[/bold] {report['model']}   [bold]request[/bold] {report['request']}")
    console.print(f"[bold]policy[/bold] {config.policy}, {config.budget.describe()}, pruning layers {stats.layers}")
    console.print(f"[bold]answer, unpruned:[/bold] {report['answer']['unpruned']}")
    console.print(f"[bold]answer, pruned:  [/bold] {report['answer']['pruned']}")
    layers = Table(title="vision tokens entering each decoder layer")
    for column in ("layer", "unpruned", "pruned", "kept + merged after pruning here"):
        layers.add_column(column, justify="right")
    records = {r.layer: r for r in stats.records}
    for index, count in enumerate(stats.vision_per_layer[0]):
        record = records.get(index)
        here = f"{len(record.kept[0])} + {len(record.merged[0])}" if record else ""
        layers.add_row(str(index), str(stats.vision_tokens[0]), str(count), here)
    console.print(layers)
    summary = Table(title="request summary")
    summary.add_column("quantity")
    summary.add_column("unpruned", justify="right")
    summary.add_column("pruned", justify="right")
    flops = stats.flops
    timing = report["timing_seconds"]
    summary.add_row("equivalent vision tokens (layer inputs)", f"{stats.vision_tokens[0]}", f"{stats.equivalent_tokens[0]:.1f}")
    summary.add_row("equivalent tokens, authors' post-prune count", f"{stats.vision_tokens[0]}", f"{stats.equivalent_tokens_post_prune[0]:.1f}")
    summary.add_row("prefill multiply-adds (decoder layers)", f"{flops.baseline:.3e}", f"{flops.pruned:.3e}")
    summary.add_row("  + the method's own overhead", "0", f"{flops.overhead_total:.3e}")
    if stats.kv_cache is not None:
        summary.add_row("KV-cache bytes after prefill", f"{stats.kv_cache.baseline_bytes:,}", f"{stats.kv_cache.pruned_bytes:,}")
    summary.add_row("prefill time (median of 3, s)", f"{timing['prefill']['unpruned']:.4f}", f"{timing['prefill']['pruned']:.4f}")
    tokens = report["new_tokens"]
    summary.add_row(
        "generate time incl. prefill (one run, s)",
        f"{timing['generate']['unpruned']:.4f} ({tokens['unpruned']} tok)",
        f"{timing['generate']['pruned']:.4f} ({tokens['pruned']} tok)",
    )
    console.print(summary)


class _RequestCapture:
    """Keeps the request context of the last prune event (public event hook)."""

    def __init__(self) -> None:
        self.request: Any = None

    @tokenprune.hookimpl
    def tokenprune_after_prune(self, event: tokenprune.PruneEvent) -> None:
        self.request = event.request


def _visualize(args: argparse.Namespace) -> int:
    from tokenprune import visualize as drawing
    from tokenprune.runner import load_model, open_images

    config = config_from_args(args)
    tokenprune.get_policy(config.policy)
    loaded = load_model(args.model, args.device, args.dtype)
    inputs, _ = request_inputs(args, loaded)
    paths = args.image or [str(p) for p in (loaded.spec.sample_images if loaded.spec else ())]
    if not paths:
        raise ConfigError("visualize needs an image: give --image and --prompt")
    images = open_images(paths)
    if not 0 <= args.image_index < len(images):
        raise ConfigError(f"--image-index must be below {len(images)}")
    capture = _RequestCapture()
    tokenprune.register_plugin(capture)
    try:
        with torch.no_grad(), tokenprune.attach(loaded.model, config=config) as handle:
            loaded.model(**{k: v.to(args.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()})
            stats = handle.stats
    finally:
        tokenprune.unregister_plugin(capture)
    request = capture.request
    if stats is None or request is None or not stats.records:
        raise ConfigError("the request has no vision tokens to prune")
    grid = request.grids[0]
    if grid is None:
        raise ConfigError(f"the adapter gives no vision grid for {loaded.name}; cannot draw patches")
    tokenizer = getattr(loaded.processor, "tokenizer", None)
    positions = request.text_positions(0).tolist()
    highlighted = set(request.query_positions.get(0, torch.empty(0)).tolist())
    ids = request.input_ids[0].tolist()
    words = [
        (tokenizer.convert_ids_to_tokens(ids[p]) if tokenizer is not None else str(ids[p]), p in highlighted)
        for p in positions
    ]
    canvas, info = drawing.render(images[args.image_index], grid, stats.records, 0, words, args.image_index)
    drawing.save(canvas, info, args.out)
    print(f"wrote {args.out}: {len(stats.records)} pruning layer(s), {sum(h for _, h in words)} highlighted prompt token(s)")
    return 0


def _split(text: str, convert: Any, what: str) -> list[Any]:
    try:
        return [convert(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ConfigError(f"--{what} takes a comma-separated list, got {text!r}") from None


def _bench(args: argparse.Namespace) -> int:
    if args.perf:
        return _bench_perf(args)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from tokenprune import bench as accuracy_bench
    from tokenprune.runner import load_model

    policies = _policies_arg(args)
    fractions = _split(args.budgets, float, "budgets")
    if any(not 0 < f <= 1 for f in fractions):
        raise ConfigError("--budgets are fractions in (0, 1]")
    if args.n < 1 or args.batch_size < 1:
        raise ConfigError("--n and --batch-size must be at least 1")
    for policy in policies:
        tokenprune.get_policy(policy)
    loaded = load_model(args.model)
    model = loaded.model
    dataset = _bench_dataset(args, loaded)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=args.json,
    ) as bar:
        task_id = bar.add_task("benchmark", total=1 + len(policies) * len(fractions))
        results = accuracy_bench.run_accuracy(
            model, dataset, policies, fractions, args.n, args.batch_size,
            progress=lambda label: bar.update(task_id, advance=1, description=label),
        )
    kinds = sorted({k for r in results for k in r.by_kind})
    command = "tokenprune bench " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in (
            ("n", args.n), ("policies", ",".join(policies)), ("budgets", args.budgets),
            ("markdown", _shown(args.markdown)), ("plot", _shown(args.plot)),
        ) if v is not None
    )
    if args.plot:
        from tokenprune.plot import line_chart

        line_chart(
            accuracy_bench.retention_series(results), args.plot,
            title=f"{loaded.name} on {dataset.name}: accuracy retention vs equivalent vision tokens",
            x_label="equivalent vision tokens (mean entering each decoder layer)", y_label="retention", y_range=(0.0, 1.05),
        )
    if args.markdown:
        section = accuracy_bench.markdown_section(results, kinds, loaded.name, dataset, args.n, command, args.plot, args.markdown)
        accuracy_bench.write_section(args.markdown, "accuracy", section)
    if args.csv:
        accuracy_bench.write_csv(results, kinds, args.csv)
    if args.json:
        print(json.dumps([r.__dict__ for r in results]))
    else:
        Console().print(accuracy_bench.markdown_table(results, kinds))
    return 0


def _shown(path: str | None) -> str | None:
    """A path as the reader would type it from the current directory (for the recorded command)."""
    import os

    return None if path is None else os.path.relpath(path)


def _policies_arg(args: argparse.Namespace) -> list[str]:
    """``--policies``, or every installed policy."""
    if args.policies:
        return _split(args.policies, str, "policies")
    return sorted(tokenprune.available_policies())


def _timing_model() -> str:
    specs = [s for s in tokenprune.available_models().values() if s.timing_default and s.scaled_inputs]
    if not specs:
        raise ConfigError("no installed plugin registers a timing model; name one with --model")
    return specs[0].name


def _bench_perf(args: argparse.Namespace) -> int:
    from tokenprune import perf, perf_report
    from tokenprune.runner import load_model

    plan = perf.PerfPlan(
        policies=tuple(_policies_arg(args)),
        equivalents=tuple(_split(args.equivalents, float, "equivalents")),
        repeats=args.repeats,
        decode_tokens=args.decode_tokens,
        scaling_images=tuple(_split(args.scaling_images, int, "scaling-images")),
        scaling_batches=tuple(_split(args.scaling_batches, int, "scaling-batches")),
        scaling_fraction=args.scaling_fraction,
        scaling_policies=tuple(_split(args.scaling_policies, str, "scaling-policies")) if args.scaling_policies else (),
        keep_all_policy=args.keep_all_policy or "",
    )
    for policy in (*plan.policies, *plan.scaling_policies, plan.keep_all_policy):
        tokenprune.get_policy(policy)
    loaded = load_model(args.model or _timing_model())
    if loaded.spec is None or loaded.spec.scaled_inputs is None:
        raise ConfigError(f"--perf needs a registered model with scaled inputs; {loaded.name!r} has none")
    console = Console(stderr=True)
    report = perf.run_perf(
        loaded.model, loaded.spec.scaled_inputs, plan, loaded.name,
        progress=lambda label: console.print(f"[dim]timing {label}...[/dim]"),
    )
    command = "tokenprune bench --perf " + " ".join(
        f"--{k} {v}" for k, v in (
            ("model", loaded.name), ("policies", ",".join(plan.policies)), ("equivalents", args.equivalents),
            ("repeats", args.repeats), ("decode-tokens", args.decode_tokens),
            ("scaling-policies", ",".join(plan.scaling_policies)), ("keep-all-policy", plan.keep_all_policy),
            ("markdown", _shown(args.markdown)), ("plot", _shown(args.plot)),
        ) if v is not None
    )
    if args.plot:
        perf_report.write_plot(report, args.plot)
    section = perf_report.markdown_section(report, command, args.plot, args.markdown or "docs/benchmarks.md")
    if args.markdown:
        from tokenprune.bench import write_section

        write_section(args.markdown, "performance", section)
    if args.json:
        print(json.dumps({
            "targets": [{"target": t, "met": m, "measured": v} for t, m, v in perf_report.targets(report)],
            "prefill": [
                {"policy": r.policy, "equivalent": r.target, "skipped": r.timing.skipped,
                 "seconds": None if r.timing.skipped else r.timing.median, "measured_speedup": r.measured_speedup,
                 "ideal_speedup": r.ideal_speedup, "overhead_share": r.overhead_share()}
                for r in report.prefill
            ],
            "unpruned_seconds": report.unhooked.median, "keep_all_seconds": report.keep_all.median,
            "decode": [d.__dict__ for d in report.decode],
            "scaling": [s.__dict__ for s in report.scaling],
        }))
    else:
        print(section)  # Markdown as is: rich would wrap table rows and read [..] as markup
    return 0


def _bench_dataset(args: argparse.Namespace, loaded: Any) -> tokenprune.DatasetSpec:
    """A registered dataset, or a JSONL file evaluated with the model's processor."""
    from pathlib import Path

    from tokenprune.datasets import jsonl_dataset

    if args.dataset and Path(args.dataset).suffix == ".jsonl":
        if loaded.processor is None:
            raise ConfigError(f"model {loaded.name!r} has no processor to read a JSONL dataset")
        from tokenprune.plugins import resolve_adapter
        from tokenprune.runner import build_inputs, open_images

        adapter_class = resolve_adapter(loaded.model)
        if adapter_class is None:
            raise tokenprune.UnsupportedModelError(f"no adapter handles {type(loaded.model).__name__}")
        first = jsonl_dataset(args.dataset, loaded.processor, 1).load(1)[0]
        ids = build_inputs(loaded.processor, open_images(first["images"]), first["question"])["input_ids"]
        vision = int(adapter_class(loaded.model).vision_mask(ids)[0].sum())
        return jsonl_dataset(args.dataset, loaded.processor, vision)
    return tokenprune.get_dataset(args.dataset, model=loaded.spec.name if loaded.spec else None)


def _options_of(policy: type[tokenprune.Policy]) -> list[dict[str, Any]]:
    return [
        {"name": name, "default": field.default, "description": field.description or ""}
        for name, field in policy.Options.model_fields.items()
    ]


def _emit(args: argparse.Namespace, rows: list[dict[str, Any]], title: str, columns: dict[str, Any]) -> int:
    """Print ``rows`` as JSON (``--json``) or as a table of ``columns`` (header -> cell function)."""
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    table = Table(title=title)
    for header in columns:
        table.add_column(header)
    for row in rows:
        table.add_row(*(str(cell(row)) for cell in columns.values()))
    Console().print(table)
    return 0


def _list_policies(args: argparse.Namespace) -> int:
    rows = [
        {
            "name": name, "description": cls.description, "module": cls.__module__,
            "default_layers_32": list(cls.default_layers), "options": _options_of(cls),
        }
        for name, cls in tokenprune.available_policies().items()
    ]
    return _emit(args, rows, "installed policies", {
        "name": lambda r: r["name"],
        "description": lambda r: r["description"],
        "default layers (32-layer decoder)": lambda r: tuple(r["default_layers_32"]),
        "options": lambda r: "\n".join(f"{o['name']}={o['default']!r}: {o['description']}" for o in r["options"]) or "-",
    })


def _list_adapters(args: argparse.Namespace) -> int:
    rows = [
        {"name": name, "model_classes": list(cls.model_classes), "module": cls.__module__}
        for name, cls in tokenprune.available_adapters().items()
    ]
    return _emit(args, rows, "installed adapters", {
        "name": lambda r: r["name"],
        "model classes": lambda r: ", ".join(r["model_classes"]),
        "plugin module": lambda r: r["module"],
    })


def _list_models(args: argparse.Namespace) -> int:
    rows = [
        {"name": spec.name, "description": spec.description, "default": spec.default}
        for spec in tokenprune.available_models().values()
    ]
    return _emit(args, rows, "models plugins can build offline", {
        "name": lambda r: r["name"],
        "default": lambda r: "yes" if r["default"] else "",
        "description": lambda r: r["description"],
    })


if __name__ == "__main__":
    sys.exit(main())
