"""Speed benchmark: prefill, policy overhead, decode and scaling on the LLaVA-1.5-shaped model.

    python benchmarks/perf.py            # writes docs/benchmarks.md (section "performance") and the plot

The same as ``tokenprune bench --perf --markdown docs/benchmarks.md --plot
docs/benchmark_speed.png --scaling-policies fastv,sparsevlm --keep-all-policy
random``; extra arguments are passed on (see ``tokenprune bench --help``).
Needs no GPU and no network; about 8 minutes on 2 CPU cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tokenprune.cli import main

DOCS = Path(__file__).resolve().parents[1] / "docs"

if __name__ == "__main__":
    raise SystemExit(main([
        "bench", "--perf", "--markdown", str(DOCS / "benchmarks.md"), "--plot", str(DOCS / "benchmark_speed.png"),
        "--scaling-policies", "fastv,sparsevlm", "--keep-all-policy", "random",
        *sys.argv[1:],
    ]))
