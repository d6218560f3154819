"""The ``tokenprune`` command line.

Commands: ``demo`` (prune a registered offline model side by side with the
unpruned one), ``policies``, ``adapters`` and ``models`` (what is installed).
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

DEMO_EPILOG = """examples:
  tokenprune demo
  tokenprune demo --policy random --ratio 0.25 --layers 1,2
  tokenprune demo --keep 16 --batch 2 --json
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TokenpruneError as exc:
        print(f"tokenprune: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokenprune", description="Prune visual tokens inside a VLM's decoder.")
    parser.add_argument("--version", action="version", version=f"tokenprune {tokenprune.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="prune a registered offline model next to the unpruned one",
        description="Run one request on a registered offline model, unpruned and pruned, and report the difference.",
        epilog=DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--model", help="registered model name (see `tokenprune models`)")
    _add_config_arguments(demo)
    demo.add_argument("--batch", type=int, default=1, help="rows in the sample batch (default 1)")
    demo.add_argument("--new-tokens", type=int, default=8, help="tokens to generate (default 8)")
    demo.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    demo.set_defaults(func=_demo)

    for name, func, text in (
        ("policies", _list_policies, "list installed policies and their options"),
        ("adapters", _list_adapters, "list installed adapters and the model classes they handle"),
        ("models", _list_models, "list models plugins can build offline"),
    ):
        sub = commands.add_parser(name, help=text, description=text.capitalize() + ".")
        sub.add_argument("--json", action="store_true", help="print JSON")
        sub.set_defaults(func=func)
    return parser


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", help="policy name (default: random)")
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
    fields.setdefault("policy", "random")
    if not any(k in fields for k in ("keep", "ratio", "equivalent")):
        fields["ratio"] = default_ratio
    return PruneConfig.build(**fields)


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    with torch.no_grad():
        result = fn()
    return result, time.perf_counter() - start


def _demo(args: argparse.Namespace) -> int:
    if args.batch < 1 or args.new_tokens < 1:
        raise ConfigError("--batch and --new-tokens must be at least 1")
    config = config_from_args(args)
    spec = tokenprune.get_model_spec(args.model)
    model = spec.build()
    inputs = spec.sample_inputs(model, args.batch)
    generate = dict(max_new_tokens=args.new_tokens, do_sample=False)

    _, base_prefill = _timed(lambda: model(**inputs))
    base_out, base_total = _timed(lambda: model.generate(**inputs, **generate))
    with tokenprune.attach(model, config=config) as handle:
        _, pruned_prefill = _timed(lambda: model(**inputs))
        pruned_out, pruned_total = _timed(lambda: model.generate(**inputs, **generate))
        stats = handle.stats
    assert stats is not None
    n = inputs["input_ids"].shape[1]
    report = {
        "model": spec.name,
        "config": config.model_dump(),
        "layers": list(stats.layers),
        "stats": stats.to_dict(),
        "timing_seconds": {
            "prefill": {"baseline": base_prefill, "pruned": pruned_prefill},
            "generate": {"baseline": base_total, "pruned": pruned_total},
        },
        "generated": {"baseline": base_out[:, n:].tolist(), "pruned": pruned_out[:, n:].tolist()},
    }
    if args.json:
        print(json.dumps(report))
        return 0
    _print_demo(spec, config, stats, report)
    return 0


def _print_demo(spec: tokenprune.ModelSpec, config: PruneConfig, stats: tokenprune.PruneStats, report: dict) -> None:
    console = Console()
    console.print(f"[bold]{spec.name}[/bold]: {spec.description}")
    console.print(f"policy [bold]{config.policy}[/bold], {config.budget.describe()}, pruning layers {stats.layers}")
    layers = Table(title="vision tokens entering each decoder layer (row 0)")
    layers.add_column("layer", justify="right")
    layers.add_column("unpruned", justify="right")
    layers.add_column("pruned", justify="right")
    for index, count in enumerate(stats.vision_per_layer[0]):
        mark = " ← pruned here" if index in stats.layers else ""
        layers.add_row(str(index), str(stats.vision_tokens[0]), f"{count}{mark}")
    console.print(layers)
    summary = Table(title="request summary (all rows)")
    summary.add_column("quantity")
    summary.add_column("unpruned", justify="right")
    summary.add_column("pruned", justify="right")
    flops = stats.flops
    summary.add_row("equivalent vision tokens (layer inputs)", f"{stats.vision_tokens[0]}", f"{stats.equivalent_tokens[0]:.1f}")
    summary.add_row("equivalent tokens, authors' post-prune count", f"{stats.vision_tokens[0]}", f"{stats.equivalent_tokens_post_prune[0]:.1f}")
    summary.add_row("prefill multiply-adds (decoder layers)", f"{flops.baseline:.3e}", f"{flops.pruned:.3e}")
    summary.add_row("  + policy overhead", "0", f"{flops.overhead_total:.3e}")
    if stats.kv_cache is not None:
        summary.add_row("KV-cache bytes after prefill", f"{stats.kv_cache.baseline_bytes:,}", f"{stats.kv_cache.pruned_bytes:,}")
    timing = report["timing_seconds"]
    summary.add_row("prefill time (one run, s)", f"{timing['prefill']['baseline']:.4f}", f"{timing['prefill']['pruned']:.4f}")
    summary.add_row("generate time (one run, s)", f"{timing['generate']['baseline']:.4f}", f"{timing['generate']['pruned']:.4f}")
    console.print(summary)
    console.print(f"generated ids, unpruned: {report['generated']['baseline'][0]}")
    console.print(f"generated ids, pruned:   {report['generated']['pruned'][0]}")


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
