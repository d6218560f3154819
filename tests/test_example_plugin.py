"""The guide's example outside plugin is discovered through its entry point and runs end to end.

Install-free: the test puts the example's source and a minimal ``.dist-info``
(holding the entry points of its ``pyproject.toml``) on ``sys.path``, rebuilds
the plugin manager from entry points, and runs the example's own tests.
"""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path

import tokenprune
from tokenprune.testing import fresh_plugin_manager

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "tokenprune-center"


def _fake_install(site: Path) -> None:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    dist = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = [f"{name} = {target}" for name, target in project["entry-points"]["tokenprune"].items()]
    (dist / "entry_points.txt").write_text("[tokenprune]\n" + "\n".join(lines) + "\n")


def test_example_plugin_is_discovered_and_passes_its_own_tests(tmp_path, monkeypatch):
    assert "center" not in tokenprune.available_policies()
    _fake_install(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    try:
        with fresh_plugin_manager():
            assert tokenprune.available_policies()["center"].__module__ == "tokenprune_center"
            spec = importlib.util.spec_from_file_location("example_center_tests", EXAMPLE / "tests" / "test_center.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            tests = [getattr(module, name) for name in dir(module) if name.startswith("test_")]
            assert len(tests) == 5
            for test in tests:
                test()
    finally:
        sys.modules.pop("tokenprune_center", None)
    assert "center" not in tokenprune.available_policies()
