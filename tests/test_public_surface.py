"""policies/ and adapters/ use only tokenprune's public surface, like outside plugins."""

from __future__ import annotations

import ast
from pathlib import Path

import tokenprune

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_PACKAGES = ("tokenprune.policies", "tokenprune.adapters")


def private_uses(source: str) -> list[str]:
    """Names a plugin module reaches in tokenprune beyond ``tokenprune.__all__``."""
    public = set(tokenprune.__all__)
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tokenprune.") and not alias.name.startswith(PLUGIN_PACKAGES):
                    found.append(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("tokenprune"):
            module = node.module or ""
            if module == "tokenprune":
                found += [f"tokenprune.{a.name}" for a in node.names if a.name not in public]
            elif not module.startswith(PLUGIN_PACKAGES):
                found.append(module)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "tokenprune":
            if node.attr not in public and node.attr not in ("policies", "adapters"):
                found.append(f"tokenprune.{node.attr}")
    return found


def test_the_checker_catches_private_imports():
    bad = "import tokenprune.engine\nfrom tokenprune.layout import Layout\nfrom tokenprune import _manager\nimport tokenprune\ntokenprune.handle.attach\n"
    assert private_uses(bad) == ["tokenprune.engine", "tokenprune.layout", "tokenprune._manager", "tokenprune.handle"]
    good = "import tokenprune\nfrom tokenprune import Policy, RowSelection\ntokenprune.attach\nfrom tokenprune.policies.sparsevlm import steps\n"
    assert private_uses(good) == []


def test_builtin_plugins_import_only_the_public_surface():
    files = sorted((ROOT / "policies").rglob("*.py")) + sorted((ROOT / "adapters").rglob("*.py"))
    assert files
    offenders = {str(f.relative_to(ROOT)): uses for f in files if (uses := private_uses(f.read_text()))}
    assert offenders == {}


def test_public_names_exist():
    for name in tokenprune.__all__:
        assert hasattr(tokenprune, name), name
