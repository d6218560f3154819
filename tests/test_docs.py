"""Docs and CI stay in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

from tokenprune import hookspec

ROOT = Path(__file__).resolve().parents[1]


def test_plugin_docs_list_every_hook():
    hooks = {name for name in dir(hookspec) if name.startswith("tokenprune_")}
    documented = set(re.findall(r"`(tokenprune_[a-z_]+)`", (ROOT / "docs" / "plugins.md").read_text()))
    assert hooks == documented


def test_ci_runs_the_readme_install_and_test_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    test_command = next(b for b in blocks if "pytest" in b)
    # every step of the README's command runs in CI, in the README's order
    steps = test_command.split(" && ")
    ci_steps = [step for line in ci.splitlines() if not line.startswith("#") for step in line.split(" && ")]
    positions = [ci_steps.index(step) for step in steps]
    assert positions == sorted(positions)
    assert "tests/legacy" in test_command  # the legacy family's tests are part of the test command
