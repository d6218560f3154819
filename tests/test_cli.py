"""The command line, end to end in a subprocess (offline)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import tokenprune
from tokenprune.cli import config_from_args


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tokenprune.cli", *args], capture_output=True, text=True, timeout=300)


def test_demo_json_matches_library_stats():
    result = run("demo", "--keep", "16", "--layers", "1,2", "--batch", "2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    spec = tokenprune.get_model_spec("tiny-random-llava")
    model = spec.build()
    with torch.no_grad(), tokenprune.attach(model, policy="random", keep=16, layers=(1, 2)) as handle:
        model(**spec.sample_inputs(model, 2))
        expected = handle.stats.to_dict()
    assert report["stats"]["vision_per_layer"] == expected["vision_per_layer"]
    assert report["stats"]["records"] == expected["records"]
    assert report["stats"]["flops"]["pruned"] == expected["flops"]["pruned"]
    assert report["stats"]["kv_cache"] == expected["kv_cache"]


def test_demo_prints_tables():
    result = run("demo")
    assert result.returncode == 0, result.stderr
    assert "← pruned here" in result.stdout
    assert "KV-cache bytes after prefill" in result.stdout


@pytest.mark.parametrize("command", [[], ["demo"], ["policies"], ["adapters"], ["models"]])
def test_help_works_everywhere(command):
    result = run(*command, "--help")
    assert result.returncode == 0 and "usage: tokenprune" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--policy", "nope"], "unknown policy 'nope'"),
        (["demo", "--keep", "999"], "larger than the 64 vision tokens"),
        (["demo", "--option", "seed=abc"], "seed"),
        (["demo", "--option", "seed"], "KEY=VALUE"),
        (["demo", "--layers", "1,x"], "comma-separated integers"),
        (["demo", "--layers", "9"], "between 1 and 3"),
        (["demo", "--model", "nope"], "unknown model 'nope'"),
        (["demo", "--config", "missing.toml"], "config file not found"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_policies_and_adapters_listings_include_builtins():
    policies = json.loads(run("policies", "--json").stdout)
    assert {"name": "seed", "default": 0} .items() <= next(p for p in policies if p["name"] == "random")["options"][0].items()
    adapters = json.loads(run("adapters", "--json").stdout)
    assert any(a["name"] == "llava" and "LlavaForConditionalGeneration" in a["model_classes"] for a in adapters)


def test_flags_override_config_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('policy = "random"\nkeep = 8\n')
    import argparse

    args = argparse.Namespace(policy=None, keep=None, ratio=None, equivalent=None, layers="2", option=["seed=5"], config=str(path))
    config = config_from_args(args)
    assert config.keep == 8 and config.layers == (2,) and config.options == {"seed": 5}
