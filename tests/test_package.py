"""The package as a user installs it: a wheel built from this tree, installed where the checkout is not on the path,
runs `sfpo --version`, a shipped config by name and the demo (everything shrunk). A file that a command reads from
the checkout instead of the package fails here, not on a user's machine."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what the build reads (setup.py's SHIP and the package); nothing else of the checkout goes along
BUILD_INPUTS = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "src", "configs",
                "docs/reproduction/results.json", "docs/reproduction/demo_record.json"]
TINY = ["eval.num_prompts=4", "eval.k=1", "rollout.num_prompts=2", "rollout.group_size=2", "log.progress=false",
        "log.tensorboard=false", "log.plot=false"]


def _run(args, env, cwd, timeout=300):
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(env, cwd): the wheel installed into a folder of its own, first on the path; cwd outside the checkout."""
    tmp = tmp_path_factory.mktemp("package")
    tree = tmp / "tree"
    for rel in BUILD_INPUTS:
        src, dst = ROOT / rel, tree / rel
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        elif src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "SFPO_CACHE_DIR": str(tmp / "cache")}
    env.pop("PYTHONPATH", None)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(tree), "-w",
          str(tmp / "wheel")], env, tmp)
    (wheel,) = (tmp / "wheel").glob("sfpo-*.whl")
    site = tmp / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
          str(wheel)], env, tmp)
    shutil.rmtree(tree)  # nothing can be read from the tree it was built from
    env["PYTHONPATH"] = str(site)  # ahead of any editable install of sfpo in this interpreter
    env["PATH"] = f"{site / 'bin'}{os.pathsep}{env['PATH']}"
    work = tmp / "work"
    work.mkdir()
    return env, work, site


@pytest.mark.slow
def test_wheel_imports_from_itself_and_has_a_version(installed):
    env, work, site = installed
    where = _run([sys.executable, "-c", "import sfpo; print(sfpo.__file__)"], env, work)
    assert where.strip().startswith(str(site))
    assert _run(["sfpo", "--version"], env, work).strip() == "sfpo 0.1.0"
    listed = _run(["sfpo", "train", "--list-configs"], env, work)
    assert "  sfpo_arithmetic\n" in listed and "  paper/sfpo_qwen2.5-math-1.5b\n" in listed and str(site) in listed


@pytest.mark.slow
def test_wheel_trains_a_shipped_config_by_name(installed):
    env, work, _ = installed
    out = _run(["sfpo", "train", "sfpo_arithmetic", "steps=1", "eval.every=1", "eval.test_num_prompts=4",
                "output_dir=run", *TINY], env, work)
    assert '"steps": 1' in out and (work / "run" / "metrics.jsonl").exists()
    assert "Setting accelerator" not in out  # DeepSpeed is not imported by training


@pytest.mark.slow
def test_wheel_runs_the_demo(installed):
    env, work, _ = installed
    out = _run(["sfpo", "demo", "--output-dir", "demo", "steps=1", "eval.every=1", *TINY], env, work)
    assert "SFPO (sfpo_noswitch)" in out and "The grid (152 runs; arithmetic" in out  # results.json shipped
    assert "shipped testbed policy" in out and "Setting accelerator" not in out
    assert "No record made" in out or "made with other settings" in out
    assert (work / "demo" / "demo.png").exists()


@pytest.mark.slow
def test_wheel_rebuilds_the_report_from_records(installed):
    """The harness ships in the package: `sfpo reproduce --analyse-only` works from the wheel, given the records."""
    env, work, _ = installed
    shutil.copytree(ROOT / "docs" / "reproduction" / "records", work / "records")
    out = _run(["sfpo", "reproduce", "--analyse-only", "--records", "records", "--report", "report"], env, work)
    results = json.loads((work / "report" / "results.json").read_text())
    assert results["records"] == 152 and not results["partial"] and '"records": 152' in out
    assert (work / "report.md").read_text().startswith("# Reproduction: SFPO vs GRPO")
