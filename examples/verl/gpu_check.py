"""Helpers for gpu_check.sh (single GPU, no network): write the tiny model, data and reward a short main_ppo run
needs, and check the results of the contract runs and of that run. Not run on CPU.

    python examples/verl/gpu_check.py prepare DIR           # DIR/model (tiny Qwen2 + tokenizer), DIR/{train,val}.parquet,
                                                            # DIR/reward.py
    python examples/verl/gpu_check.py contract RESULT.json  # asserts on a verl_contract_worker.py result
    python examples/verl/gpu_check.py run DIR LOG [LOG2]    # asserts on the main_ppo run (and its resume)
"""

import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "integrations"), str(ROOT / "tests"), str(ROOT / "src")]

REWARD = '''def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    """Dense toy reward: the fraction of the answer's characters matched position by position."""
    hits = sum(a == b for a, b in zip(solution_str.strip(), ground_truth))
    return hits / max(len(ground_truth), len(solution_str.strip()), 1)
'''


def prepare(out: str) -> None:
    import pandas as pd
    from transformers import AutoTokenizer

    from verl_cpu import save_tiny_qwen2

    out = Path(out)
    model = out / "model"
    save_tiny_qwen2(str(model), hidden=128, layers=2)  # head_dim 64: within every vLLM attention backend
    tok = AutoTokenizer.from_pretrained(model)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # verl applies a chat template
    tok.save_pretrained(model)
    rng = random.Random(0)
    for split, n in (("train", 256), ("val", 32)):
        rows = []
        for i in range(n):
            a, b = rng.randint(0, 49), rng.randint(0, 49)
            rows.append({"data_source": "toy_add", "prompt": [{"role": "user", "content": f"{a}+{b}="}],
                         "ability": "math", "reward_model": {"style": "rule", "ground_truth": str(a + b)},
                         "extra_info": {"split": split, "index": i}})
        pd.DataFrame(rows).to_parquet(out / f"{split}.parquet")
    (out / "reward.py").write_text(REWARD)
    print(f"prepared {out}")


def check_contract(path: str) -> None:
    r = json.loads(Path(path).read_text())
    d = r.pop("max_diff")
    noise = d["plain_k_plus_1 rerun"]
    tol = max(10 * noise, 1e-6)  # GPU kernels need not be bit-reproducible: compare with the device's own noise
    assert d["sfpo_alpha_1 vs plain_k_plus_1"] <= tol, d
    assert d["sfpo_off vs plain_1"] <= tol, d
    assert d["sfpo vs plain_k_plus_1"] > 100 * tol, d
    s = r["sfpo"]
    assert max(s["reposition_error"]) < 1e-5 and min(s["moved"]) > 1e-3, s
    assert max(s["drift_error"]) < 1e-5, s
    for name, run in r.items():
        assert run["lr_steps"] == 2 and run["replicas_identical"], (name, run)
    assert s["optimizer_steps"] == [12] and r["sfpo_off"]["optimizer_steps"] == [4]
    print(f"contract ok: {json.dumps(d)}")


def _metric_rows(log: str) -> list[dict]:
    """verl's console logger: one line per step, 'step:N - key:value - ...' (numpy floats as np.float64(v))."""
    rows = []
    for line in Path(log).read_text().splitlines():
        if "sfpo/passes" in line:
            rows.append({k: float(v) for k, v in re.findall(r"(sfpo/[a-z_]+):(?:np\.float\d+\()?(-?[0-9.eE+-]+)", line)}
                        | {"step": int(re.search(r"step:(\d+)", line).group(1))})
    return rows


def check_run(out: str, log: str, resumed_log: str | None = None) -> None:
    rows = _metric_rows(log)
    assert [r["step"] for r in rows] == [1, 2, 3, 4], rows
    # fixed_step switch with stop_step 3: SFPO steps 0, 1, 2 run K+1 = 3 passes, step 3 one pass
    assert [r["sfpo/passes"] for r in rows] == [3.0, 3.0, 3.0, 1.0], rows
    assert all(r["sfpo/drift_norm"] > 0 for r in rows[:3]) and "sfpo/drift_norm" not in rows[3], rows
    state = json.loads((Path(out) / "ckpt" / "global_step_4" / "sfpo_state.json").read_text())
    assert state["sfpo_steps"] == 4 and state["switch"]["active"] is False, state
    if resumed_log:
        resumed = _metric_rows(resumed_log)
        assert [r["step"] for r in resumed] == [5] and resumed[0]["sfpo/passes"] == 1.0, resumed
    print(f"main_ppo ok: {rows}")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"prepare": prepare, "contract": check_contract, "run": check_run}[cmd](*args)
