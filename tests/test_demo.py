"""`sfpo demo` end to end with everything shrunk (a 5-step warm-start, 2 RL steps per method): the table, the
PNG and the final JSON line with the keys the README promises."""

import json

from sfpo.cli import main

TINY = ["model.warmup_steps=5", "steps=2", "eval.every=1", "eval.num_prompts=8", "eval.k=2", "rollout.num_prompts=4",
        "rollout.group_size=2", "log.progress=false", "log.tensorboard=false"]


def test_demo_prints_table_png_and_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SFPO_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["demo", "--output-dir", str(tmp_path / "demo"), *TINY]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    for key in ("grpo_best_acc", "sfpo_best_acc", "rollouts_ratio", "wallclock_ratio", "grpo_step_s", "sfpo_step_s"):
        assert key in result
    assert 0.0 <= result["grpo_best_acc"] <= 1.0 and result["sfpo_step_s"] > 0
    assert any("best validation accuracy" in line for line in out)
    assert (tmp_path / "demo" / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "demo" / "grpo" / "metrics.jsonl").exists()
    assert list((tmp_path / "cache" / "testbed").iterdir())  # the warm-start went to the configured cache
