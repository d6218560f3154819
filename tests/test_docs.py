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
    install, _, pytest_part = test_command.rpartition(" && ")
    assert install in ci and pytest_part in ci
