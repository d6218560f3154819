"""The command line, end to end in a subprocess (offline)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

import tokenprune
from tokenprune.cli import config_from_args

TINY = ["--model", "tiny-random-llava"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tokenprune.cli", *args], capture_output=True, text=True, timeout=300)


def test_run_without_arguments_answers_the_shipped_sample():
    result = run("run")
    assert result.returncode == 0, result.stderr
    assert "shapes-llava" in result.stdout and "what colour is the circle ?" in result.stdout
    assert "answer, unpruned:" in result.stdout and "answer, pruned:" in result.stdout
    assert "KV-cache bytes after prefill" in result.stdout and "method's own overhead" in result.stdout


def test_run_json_matches_library_stats():
    result = run("run", *TINY, "--policy", "random", "--keep", "16", "--layers", "1,2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    spec = tokenprune.get_model_spec("tiny-random-llava")
    model = spec.build()
    with torch.no_grad(), tokenprune.attach(model, policy="random", keep=16, layers=(1, 2)) as handle:
        model.generate(**spec.sample_inputs(model, 1), max_new_tokens=8, do_sample=False)
        expected = handle.stats.to_dict()
    for key in ("vision_per_layer", "records", "equivalent_tokens", "kv_cache"):
        assert report["stats"][key] == expected[key], key
    assert report["stats"]["flops"]["pruned"] == expected["flops"]["pruned"]


def test_run_with_an_image_and_prompt_on_a_checkpoint_directory(tmp_path):
    from tokenprune.adapters.shapes import model as shapes_model
    from tokenprune.adapters.shapes import task

    image = tmp_path / "scene.png"
    sample, question = task.held_out(1)[0]
    sample.image.save(image)
    result = run("run", "--model", str(shapes_model.CHECKPOINT), "--image", str(image), "--prompt", question.text,
                 "--policy", "fastv", "--ratio", "0.3", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["request"] == question.text and report["stats"]["vision_tokens"] == [144]
    assert isinstance(report["answer"]["pruned"], str)


def test_visualize_png_matches_the_kept_indices(tmp_path):
    out = tmp_path / "vis.png"
    result = run("visualize", "--policy", "sparsevlm-reference", "--ratio", "0.2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    stats_run = run("run", "--policy", "sparsevlm-reference", "--ratio", "0.2", "--json")
    records = json.loads(stats_run.stdout)["stats"]["records"]
    picture = Image.open(out)
    geometry = json.loads(picture.text["tokenprune"])
    picture = picture.convert("RGB")
    from tokenprune.adapters.shapes.plugin import SAMPLE_IMAGE

    cell, rows, cols = geometry["cell"], geometry["rows"], geometry["cols"]
    reference = Image.open(SAMPLE_IMAGE).convert("RGB").resize((cols * cell, rows * cell), Image.BICUBIC)
    assert len(geometry["panels"]) == len(records) == 3
    for panel, record in zip(geometry["panels"], records):
        kept = set(record["kept"][0])
        for ordinal in range(rows * cols):
            r, c = divmod(ordinal, cols)
            centre = (c * cell + cell // 2, r * cell + cell // 2)
            shown = picture.getpixel((panel["x"] + centre[0], panel["y"] + centre[1]))
            unchanged = shown == reference.getpixel(centre)
            assert unchanged == (ordinal in kept), (panel["layer"], ordinal)


def test_bench_writes_table_plot_and_csv(tmp_path):
    markdown, plot, csv = tmp_path / "b.md", tmp_path / "b.png", tmp_path / "b.csv"
    result = run("bench", "--n", "20", "--policies", "random,tome", "--budgets", "0.5,0.2",
                 "--markdown", str(markdown), "--plot", str(plot), "--csv", str(csv))
    assert result.returncode == 0, result.stderr
    text = markdown.read_text()
    assert "<!-- accuracy:begin -->" in text and "| random | 50% (72.0)" in text
    assert "| tome | 20% (28.8) | not reachable" in text  # ToMe merges at most half per layer
    assert Image.open(plot).size == (900, 560)
    assert len(csv.read_text().splitlines()) == 1 + 1 + 4
    again = run("bench", "--n", "20", "--policies", "random", "--budgets", "0.5", "--markdown", str(markdown))
    assert again.returncode == 0 and markdown.read_text().count("<!-- accuracy:begin -->") == 1


def test_bench_on_a_jsonl_dataset(tmp_path):
    from tokenprune.adapters.shapes import task

    lines = []
    for index, (sample, question) in enumerate(task.held_out(3)):
        sample.image.save(tmp_path / f"{index}.png")
        lines.append(json.dumps({"image": f"{index}.png", "question": question.text, "answer": question.answer, "kind": question.kind}))
    (tmp_path / "set.jsonl").write_text("\n".join(lines))
    result = run("bench", "--dataset", str(tmp_path / "set.jsonl"), "--n", "3", "--policies", "random", "--budgets", "0.5", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["policy"] for r in rows] == ["unpruned", "random"] and rows[1]["equivalent_target"] == 72.0


@pytest.mark.parametrize("command", [[], ["run"], ["bench"], ["visualize"], ["policies"], ["adapters"], ["models"]])
def test_help_works_everywhere(command):
    result = run(*command, "--help")
    assert result.returncode == 0 and "usage: tokenprune" in result.stdout


@pytest.fixture(scope="module")
def broken_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "not-an-image.png").write_text("hello")
    other = root / "gpt2"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    return root


BAD = [
    (["run", "--image", "missing.png", "--prompt", "hi"], "image file not found: missing.png"),
    (["run", "--image", "{root}/not-an-image.png", "--prompt", "hi"], "cannot read image"),
    (["run", "--policy", "nope"], "unknown policy 'nope'"),
    (["run", "--option", "tau=abc"], "tau"),
    (["run", "--option", "seed"], "KEY=VALUE"),
    (["run", "--keep", "999"], "larger than the 144 vision tokens"),
    (["run", "--model", "{root}/gpt2"], "GPT2LMHeadModel, which no installed adapter handles"),
    (["run", "--layers", "1,x"], "comma-separated integers"),
    (["run", "--layers", "9"], "between 1 and 5"),
    (["run", "--model", "nope"], "neither a registered model"),
    (["run", "--config", "missing.toml"], "config file not found"),
    (["run", "--dtype", "int8"], "--dtype must be one of"),
    (["bench", "--budgets", "2"], "fractions in (0, 1]"),
    (["bench", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["visualize", "--out", "x.png", "--image-index", "3"], "--image-index must be below 1"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_input_is_one_line_on_stderr_and_exit_2(broken_files, args, message):
    result = run(*(a.format(root=broken_files) for a in args))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_policies_and_adapters_listings_include_builtins():
    policies = json.loads(run("policies", "--json").stdout)
    assert {p["name"] for p in policies} >= {"random", "fastv", "tome", "sparsevlm", "sparsevlm-reference"}
    adapters = json.loads(run("adapters", "--json").stdout)
    assert any(a["name"] == "llava" and "LlavaForConditionalGeneration" in a["model_classes"] for a in adapters)
    models = json.loads(run("models", "--json").stdout)
    assert [m["name"] for m in models if m["default"]] == ["shapes-llava"]


def test_flags_override_config_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('policy = "random"\nkeep = 8\n')
    args = argparse.Namespace(policy=None, keep=None, ratio=None, equivalent=None, layers="2", option=["seed=5"], config=str(path))
    config = config_from_args(args)
    assert config.keep == 8 and config.layers == (2,) and config.options == {"seed": 5}


def test_bench_perf_writes_its_section_and_plot_and_reports_exact_kv_bytes(tmp_path):
    markdown, plot = tmp_path / "b.md", tmp_path / "speed.png"
    markdown.write_text("# Benchmarks\n\n<!-- accuracy:begin -->\nkept\n<!-- accuracy:end -->\n")
    result = run("bench", "--perf", "--model", "tiny-random-llava", "--policies", "random,sparsevlm",
                 "--equivalents", "40,30", "--repeats", "1", "--decode-tokens", "2", "--scaling-images", "1,2",
                 "--scaling-batches", "1,2", "--scaling-fraction", "0.5", "--scaling-policies", "fastv",
                 "--markdown", str(markdown), "--plot", str(plot), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [(r["policy"], r["equivalent"]) for r in report["prefill"]] == [
        ("random", 40.0), ("sparsevlm", 40.0), ("random", 30.0), ("sparsevlm", 30.0)]
    for row in report["prefill"]:
        assert row["skipped"] is None and row["seconds"] > 0 and row["ideal_speedup"] > 1
    assert all(d["kv_bytes"] == d["kv_theoretical"] for d in report["decode"])
    assert [(s["vision_tokens"], s["batch"]) for s in report["scaling"]] == [(64, 1), (128, 1), (64, 2)]
    text = markdown.read_text()
    assert "<!-- performance:begin -->" in text and "kept" in text  # the accuracy section survives
    assert "| keep-all (hooks, nothing dropped) |" in text and "measured / ideal" in text
    assert Image.open(plot).size == (900, 560)


def test_bench_perf_needs_a_model_with_scaled_inputs():
    result = run("bench", "--perf", "--model", "tiny-random-qwen2-vl", "--repeats", "1")
    assert result.returncode == 2 and "scaled inputs" in result.stderr
    assert "Traceback" not in result.stderr
    bad = run("bench", "--perf", "--repeats", "0")
    assert bad.returncode == 2 and "repeats" in bad.stderr
