"""Reproduction harness: does SFPO reach GRPO's best with fewer rollouts, is it the reposition or just more
passes over the batch, and does it hold across starting policies, seeds, learning rates and tasks? Runs GRPO,
GRPO with K+1 passes, SFPO, trust-region SFPO and the paper's ablations on the CPU testbed, each run in its own
process, and compares them with paired bootstrap intervals over policies × seeds.

    python benchmarks/reproduce.py --quick                          # ≤15 min on 2 cores: a smoke run
    python benchmarks/reproduce.py --grid issue12 --workers 2       # the grid of docs/reproduction.md (≈20 CPU-h)
    python benchmarks/reproduce.py --analyse-only                   # the report, from the committed records

Every finished run leaves a small JSON record (validation curve, test accuracy, phase times, wall and CPU
time, the starting policy's sha256; no weights) in --records (default docs/reproduction/records/), and a run
whose record exists is never recomputed: commit records as they land and the grid resumes on any machine,
in any later session (an interrupted run resumes from its checkpoint under --out). Several harness processes
may share one grid (each claims its run under --out). The report
(docs/reproduction.md + results.json) is regenerated from the records alone. Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sfpo.compare import effect_summary, match_ratios  # noqa: E402
from sfpo.demo import cpu_snapshot  # noqa: E402

logger = logging.getLogger("reproduce")

CONFIG = ROOT / "configs" / "reproduce.yaml"
RECORDS = ROOT / "docs" / "reproduction" / "records"
REPORT = ROOT / "docs" / "reproduction"
SFPO = ["algorithm.name=sfpo", "algorithm.inner_steps=3", "algorithm.alpha=0.8"]
KL_BUDGET = 0.0025  # trust-region SFPO's budget; see docs/reproduction.md ("Trust-region SFPO") for its choice
METHODS = {
    "grpo": ["algorithm.name=grpo"],
    "grpo_4passes": ["algorithm.name=grpo", "algorithm.passes=4"],
    "sfpo": SFPO + ["algorithm.switch=entropy"],
    "sfpo_noswitch": SFPO + ["algorithm.switch=never"],
    "sfpo_tr": SFPO + ["algorithm.switch=never", "algorithm.alpha_rule=kl_budget", f"algorithm.kl_budget={KL_BUDGET}"],
    **{f"sfpo_a{a}": SFPO + [f"algorithm.alpha={a}", "algorithm.switch=never"] for a in (0.2, 0.5, 1.0)},
    **{f"sfpo_k{k}": SFPO + [f"algorithm.inner_steps={k}", "algorithm.switch=never"] for k in (1, 5, 7)},
    "sfpo_k7_a0.2": SFPO + ["algorithm.inner_steps=7", "algorithm.alpha=0.2", "algorithm.switch=never"],
    "sfpo_reset": SFPO + ["algorithm.optimizer_state=reset", "algorithm.switch=never"],
    "sfpo_restore": SFPO + ["algorithm.optimizer_state=restore", "algorithm.switch=never"],
    "sfpo_noslow": SFPO + ["algorithm.slow_pass=false", "algorithm.switch=never"],
}
LABELS = {"grpo": "GRPO", "grpo_4passes": "GRPO-4 (K+1 passes)", "sfpo": "SFPO (entropy switch)",
          "sfpo_noswitch": "SFPO", "sfpo_tr": f"trust-region SFPO (KL ≤ {KL_BUDGET})"}
TASKS = {  # task label → overrides; arithmetic and countdown are what the testbed was tuned on
    "arithmetic": [],
    "countdown": ["task.name=countdown"],
    "noise": ["task.reward_noise=0.2"],
    # nobody tuned the testbed on it (added with this grid); 3-digit worked solutions run to ~50 characters
    "multiplication": ["task.name=multiplication", "rollout.max_new_tokens=64"],
    # 8 terms make ~80-token worked solutions; on a CPU that lengthens every phase alike, so it is not in the grid
    "arith8": ["task.kwargs.terms=8", "rollout.max_new_tokens=96"],
    # generation-heavy: arithmetic, decoded 8 sequences at a time, so that the rollout takes about half of a GRPO
    # step as on the paper's GPUs (benchmarks/phase_split.py); the same task and starting policy as arithmetic
    "gen_heavy": ["rollout.engine_kwargs={max_batch_sequences: 8}"],
}
GRID_METHODS = ("grpo", "grpo_4passes", "sfpo_noswitch", "sfpo_tr")
LRS = (1e-5, 3e-5, 1e-4, 3e-4)  # a 30× span around the base 1e-4
HEADLINE = "sfpo_noswitch"  # the SFPO of results.json's headline keys: the algorithm itself, no switch
QUICK = ["steps=30", "eval.every=5", "eval.num_prompts=64", "eval.test_num_prompts=64"]
SHARED_BELOW = 0.8  # CPU time ÷ wall time of a one-thread run below this: the cores were shared
RATIO_KEYS = (("rollouts", "vs_grpo", "rollouts_ratio_vs_grpo"),
              ("rollouts", "vs_grpo_passes", "rollouts_ratio_vs_grpo_passes"),
              ("wallclock", "vs_grpo", "wallclock_ratio_vs_grpo"),
              ("wallclock", "vs_grpo_passes", "wallclock_ratio_vs_grpo_passes"))


# ------------------------------------------------------------------------------------------------ the grid
def run_key(task: str, method: str, lr: float) -> str:
    return f"{task}__{method}__lr{lr:.0e}"


def record_name(task: str, method: str, lr: float, policy: int, seed: int) -> str:
    return f"{run_key(task, method, lr)}__p{policy}s{seed}.json"


def spec(task: str, method: str, lr: float, policy: int, seed: int) -> dict:
    return {"task": task, "method": method, "lr": lr, "policy": policy, "seed": seed,
            "overrides": METHODS[method] + TASKS[task] + [f"optim.lr={lr}", f"model.warmup_seed={policy}"]}


SELECT = (0, 0)  # (policy, seed) whose sweep picks each method's lr; held out of the comparison at that lr
POLICIES = (0, 1, 2)
SEEDS = (1, 2, 3)  # the comparison's seeds: none of them took part in choosing the lr


def sweep(task: str, seeds=(SELECT[1],), policy: int = SELECT[0]) -> list[dict]:
    # seed-major, then lr: a partial sweep already compares every method at each lr for the first seed
    return [spec(task, m, lr, policy, s) for s in seeds for lr in LRS for m in GRID_METHODS]


def at_best(task: str, best: dict[str, float], policies, seeds) -> list[dict]:
    # seed-major over policies: a partial comparison already spans every policy
    return [spec(task, m, best[m], p, s) for s in seeds for p in policies for m in GRID_METHODS]


def best_lrs(records: list[dict], task: str) -> dict[str, float] | None:
    """Each method's learning rate with the highest best validation accuracy in ``task``'s sweep on the selection
    unit (policy 0, seed 0); None until that sweep has a record for every method at every lr. The comparison at
    these lrs runs on other (policy, seed) units, so choosing the lr does not flatter the method that won it."""
    cells = index(records)
    out = {}
    for m in GRID_METHODS:
        scores = {}
        for lr in LRS:
            rec = cells.get((task, m, lr), {}).get(SELECT[0], {}).get(SELECT[1])
            if rec is None:
                return None
            scores[lr] = rec["best_val"]
        out[m] = max(scores, key=lambda lr: (scores[lr], -lr))
    return out


def held_out(cell: dict[int, dict[int, dict]]) -> dict[int, dict[int, dict]]:
    """A cell without the selection unit."""
    out = {p: {s: r for s, r in seeds.items() if (p, s) != SELECT} for p, seeds in cell.items()}
    return {p: seeds for p, seeds in out.items() if seeds}


def plan(grid: str, seeds: list[int], records: list[dict]) -> tuple[list[dict], list[str]]:
    """The runs of ``grid`` in the order they should run, and what could not be planned yet (and why)."""
    base = 1e-4
    waiting: list[str] = []
    if grid == "quick":
        return [spec("arithmetic", m, base, 0, seeds[0]) for m in ("grpo", "grpo_4passes", "sfpo")], waiting
    if grid == "main":
        return [spec("arithmetic", m, base, 0, s) for s in seeds for m in ("grpo", "grpo_4passes", "sfpo",
                                                                           "sfpo_noswitch")], waiting
    if grid == "ablations":
        return [spec("arithmetic", m, base, 0, s) for s in seeds for m in METHODS if m.startswith("sfpo_")
                and m not in ("sfpo_noswitch", "sfpo_tr")], waiting
    if grid == "hard":
        return [spec(t, m, base, 0, s) for t in ("noise", "countdown") for s in seeds
                for m in ("grpo", "grpo_4passes", "sfpo_noswitch")], waiting
    if grid != "issue12":
        raise SystemExit(f"unknown grid {grid!r}")
    # In order of what each run adds: a task's lr sweep (selection unit), then its comparison at each method's
    # best lr (3 policies × 3 seeds); arithmetic first, then countdown, then the untuned task and the
    # generation-heavy setting (1 policy × 3 seeds at arithmetic's lrs), and last the sweeps' second seed
    # (how stable the choice of lr is).
    n, runs = len(GRID_METHODS), []
    for task in ("arithmetic", "countdown"):
        runs += sweep(task)
        best = best_lrs(records, task)
        if best is None:
            waiting.append(f"{task} at each method's best lr ({len(POLICIES)} policies × {len(SEEDS)} seeds, "
                           f"{len(POLICIES) * len(SEEDS) * n} runs): after the {task} sweep")
        else:
            runs += at_best(task, best, POLICIES, SEEDS)
    best = best_lrs(records, "arithmetic")
    for task in ("multiplication", "gen_heavy"):
        if best is None:
            waiting.append(f"{task} (1 policy × {len(SEEDS)} seeds at arithmetic's best lrs, {len(SEEDS) * n} runs): "
                           "after the arithmetic sweep")
        else:
            runs += at_best(task, best, (0,), SEEDS)
    runs += sweep("arithmetic", seeds=(1,)) + sweep("countdown", seeds=(1,))
    seen, ordered = set(), []
    for r in runs:  # the second sweep seed's runs at a best lr are comparison runs too: run them once
        name = record_name(r["task"], r["method"], r["lr"], r["policy"], r["seed"])
        if name not in seen:
            seen.add(name)
            ordered.append(r)
    return ordered, waiting


# ---------------------------------------------------------------------------------------------- one run
_POLICY_LOCK = threading.Lock()


def _policy(task: str, policy: int) -> dict:
    """Build (or find) the starting policy of ``task`` for warm-start seed ``policy``; its identity."""
    from sfpo.config import load_config
    from sfpo.testbed import SHIPPED_DIR, file_sha256, warm_start

    cfg = load_config(CONFIG, TASKS[task] + [f"model.warmup_seed={policy}"])
    path = warm_start(cfg.task.name, cfg.task.kwargs, seed=policy, size=cfg.model.testbed_size, progress=False)
    info = json.loads((path / "sfpo_testbed.json").read_text())
    return {"folder": path.name, "shipped": path.parent == SHIPPED_DIR,
            "sha256": file_sha256(path / "model.safetensors"), "steps_trained": info.get("steps_trained"),
            "probe_pass1": info.get("probe_pass1")}


def _environment() -> dict:
    import torch

    from sfpo.testbed import KERNEL_KNOBS

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"python": platform.python_version(), "torch": torch.__version__, "cpu": cpu, "cpus": os.cpu_count(),
            "capability": torch.backends.cpu.get_cpu_capability(),
            "kernels": {k: os.environ[k] for k in KERNEL_KNOBS if os.environ.get(k)},
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True).stdout.strip()}


def make_record(sp: dict, metrics: list[dict], summary: dict, wall_s: float, cpu_s: float, threads: int,
                policy: dict, env: dict) -> dict:
    """The small, self-contained result of one run: everything the report needs, no weights."""
    val = [[r["step"], r.get("rollouts", 0.0), r.get("time/train_elapsed", 0.0), r["val/accuracy"]]
           for r in metrics if r.get("val/accuracy") is not None]
    steps = [r for r in metrics if r.get("time/step") is not None]
    active = [r for r in steps if r.get("sfpo/active") == 1.0] or steps  # SFPO's phases: while it was on

    def med(rows, k):
        xs = [r[k] for r in rows if r.get(k) is not None]
        return statistics.median(xs) if xs else None

    phases = ("time/rollout", "time/reward", "time/old_logprobs", "time/fast", "time/reposition", "time/slow",
              "time/update", "time/step")
    return {**{k: sp[k] for k in ("task", "method", "lr", "policy", "seed")}, "overrides": sp["overrides"],
            "val": val, "best_val": summary["best_accuracy"], "best_step": summary["best_step"],
            "test_of_best": summary.get("test/best_accuracy"), "test_final": summary.get("test/final_accuracy"),
            "steps": summary["steps"], "rollouts": summary["rollouts"], "train_time_s": summary["train_time"],
            "step_s": med(steps, "time/step"), "phase_s": {k: med(active, k) for k in phases},
            "alpha": med(active, "sfpo/alpha"), "kl_fast": med(active, "sfpo/kl_fast"),
            "switched_off_at": summary.get("switched_off_at"), "peak_rss_mb": summary.get("peak_rss_mb"),
            "wall_s": wall_s, "cpu_s": cpu_s, "threads": threads,
            "cpu_per_wall": cpu_s / wall_s if wall_s else None,
            "cores_shared": threads == 1 and wall_s > 0 and cpu_s / wall_s < SHARED_BELOW,
            "policy_info": policy, "env": env}


def run_one(sp: dict, out: Path, records: Path, extra: list[str], threads: int, env: dict,
            parallel: int = 1) -> dict:
    from sfpo.metrics import read_metrics

    name = record_name(sp["task"], sp["method"], sp["lr"], sp["policy"], sp["seed"])
    if (records / name).exists():
        return json.loads((records / name).read_text())
    with _POLICY_LOCK:  # two workers never build the same policy at once
        policy = _policy(sp["task"], sp["policy"])  # built here (cached), so the run's own time excludes it
    run_dir = out / name.removesuffix(".json")
    cmd = [sys.executable, "-m", "sfpo.cli", "train", str(CONFIG), *sp["overrides"], *extra,
           f"seed={sp['seed']}", f"threads={threads}", f"output_dir={run_dir}", "log.progress=false",
           "log.tensorboard=false", "log.plot=false", "checkpoint_every=10"]
    logger.info("%s: %s", name, " ".join(cmd[3:]))
    run_dir.mkdir(parents=True, exist_ok=True)
    resumed = _last_checkpoint(run_dir)  # the trainer resumes from it; wall/CPU time then cover the rest only
    busy0 = cpu_snapshot()["busy"]
    code, wall, cpu = run_timed(cmd, {**os.environ, "PYTHONPATH": str(ROOT / "src")}, run_dir / "stderr.log")
    if code != 0:
        raise RuntimeError(f"run {name} failed (exit {code}):\n{(run_dir / 'stderr.log').read_text()[-4000:]}")
    rec = make_record(sp, read_metrics(run_dir), json.loads((run_dir / "summary.json").read_text()), wall, cpu,
                      threads, policy, env)
    rec["resumed_from_step"] = resumed  # None: one uninterrupted process; else wall_s/cpu_s from that step on
    rec["parallel_runs"] = parallel  # runs this harness process kept in flight at once (each on its own core)
    busy1 = cpu_snapshot()["busy"]  # the whole machine's busy CPU seconds: what else ran beside this run
    rec["other_cores"] = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0 - cpu) / wall)
    records.mkdir(parents=True, exist_ok=True)
    tmp = records / (name + ".tmp")
    tmp.write_text(json.dumps(rec, indent=1) + "\n")
    tmp.rename(records / name)
    for sub in ("checkpoints", "best"):  # the record holds the result; weights of finished runs are not kept
        shutil.rmtree(run_dir / sub, ignore_errors=True)
    logger.info("%s: done in %.0f s wall, %.0f s CPU (%.2f)%s", name, wall, cpu, cpu / wall,
                " — cores were shared" if rec["cores_shared"] else "")
    return rec


def _last_checkpoint(run_dir: Path) -> int | None:
    """The step the trainer will resume ``run_dir`` from (its own rule for a complete checkpoint), or None."""
    from sfpo.checkpointing import complete_checkpoints

    ckpts = complete_checkpoints(run_dir)
    return int(ckpts[-1].name.removeprefix("step_")) if ckpts else None


def run_timed(cmd: list[str], env: dict, log: Path) -> tuple[int, float, float]:
    """Run ``cmd`` with stderr to ``log`` (a file, not a pipe: nothing to drain while waiting): its exit code,
    wall seconds and its own CPU seconds (from wait4, so runs in flight beside it do not count)."""
    t0 = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


# -------------------------------------------------------------------------------------------- analysis
def load_records(records: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(records.glob("*.json"))] if records.exists() else []


def index(records: list[dict]) -> dict[tuple, dict[int, dict[int, dict]]]:
    """(task, method, lr) → policy → seed → record."""
    cells: dict[tuple, dict[int, dict[int, dict]]] = {}
    for r in records:
        cells.setdefault((r["task"], r["method"], r["lr"]), {}).setdefault(r["policy"], {})[r["seed"]] = r
    return cells


def _curve(rec: dict) -> list[dict]:
    return [{"step": s, "rollouts": n, "time/train_elapsed": t, "val/accuracy": a} for s, n, t, a in rec["val"]]


def paired(base: dict[int, dict[int, dict]], run: dict[int, dict[int, dict]], fn) -> dict[int, dict[int, object]]:
    """fn(baseline record, run record) for every (policy, seed) both have: the units of a paired comparison."""
    return {p: {s: fn(base[p][s], run[p][s]) for s in sorted(run[p]) if s in base.get(p, {})}
            for p in sorted(run) if p in base}


def _ratio(kind: str):
    field = "rollouts_ratio" if kind == "rollouts" else "wallclock_ratio"
    return lambda b, r: match_ratios(_curve(b), _curve(r))[field]


def compare(base: dict, run: dict) -> dict:
    """Every paired effect of ``run`` against ``base``: rollouts and wall-clock ratios to reach the baseline's
    best, and the differences in best validation and in test accuracy of the best checkpoint."""
    out = {}
    for kind in ("rollouts", "wallclock"):
        units = paired(base, run, _ratio(kind))
        out[f"{kind}_ratio"] = {**effect_summary(units, kind="ratio"), "per_run": _flat(units),
                                "reached": sum(v is not None for v in _flat(units).values())}
    for key in ("best_val", "test_of_best"):
        units = paired(base, run, lambda b, r, k=key: None if r[k] is None or b[k] is None else r[k] - b[k])
        out[f"{key}_diff"] = {**effect_summary(units, kind="difference"), "per_run": _flat(units)}
    shared = [rec["cores_shared"] for cell in (base, run) for seeds in cell.values() for rec in seeds.values()]
    out["wallclock_reliable"] = not any(shared)
    return out


def _flat(units: dict[int, dict[int, object]]) -> dict[str, object]:
    return {f"p{p}s{s}": v for p, seeds in units.items() for s, v in seeds.items()}


def cell_summary(cell: dict[int, dict[int, dict]]) -> dict:
    recs = [r for seeds in cell.values() for r in seeds.values()]

    def med(key, sub=None):
        xs = [(r[key] if sub is None else (r[key] or {}).get(sub)) for r in recs]
        xs = [x for x in xs if x is not None]
        return statistics.median(xs) if xs else None

    return {"n": len(recs), "policies": sorted(cell), "best_val": med("best_val"),
            "best_val_range": [min(r["best_val"] for r in recs), max(r["best_val"] for r in recs)],
            "test_of_best": med("test_of_best"), "step_s": med("step_s"), "alpha": med("alpha"),
            "kl_fast": med("kl_fast"), "cpu_per_wall": med("cpu_per_wall"),
            "phase_s": {k: med("phase_s", k) for k in ("time/rollout", "time/old_logprobs", "time/update")},
            "cores_shared": sum(r["cores_shared"] for r in recs)}


def sweep_units(cells: dict, task: str, method: str, cell: dict[int, dict[int, dict]]) -> dict:
    """The sweep's part of a cell: policy 0's seeds that ``method`` ran at two or more learning rates (the
    comparison's extra policies and seeds at a best lr are not sweep runs); the whole cell where the method ran
    at one lr only."""
    lrs = [c for (t, m, _), c in cells.items() if t == task and m == method]
    if len(lrs) < 2:
        return cell
    runs = Counter(s for c in lrs for s in c.get(0, {}))
    kept = {s: r for s, r in cell.get(0, {}).items() if runs[s] >= 2}
    return {0: kept} if kept else {}


def analyse(records: list[dict]) -> dict:
    cells = index(records)
    tasks = sorted({t for t, _, _ in cells})
    out: dict = {"sweep": {}, "best_lr": {}, "main": {}}
    for task in tasks:
        rows = {}
        for (t, m, lr), cell in sorted(cells.items(), key=lambda kv: (kv[0][2], kv[0][1])):
            if t != task:
                continue
            cell = sweep_units(cells, task, m, cell)
            row = cell_summary(cell)
            for base in ("grpo", "grpo_4passes"):
                if (task, base, lr) in cells and m != base:
                    row[f"vs_{base}"] = compare(sweep_units(cells, task, base, cells[(task, base, lr)]), cell)
            rows[f"{m}@{lr:.0e}"] = row
        out["sweep"][task] = rows
        best = best_lrs(records, task) if task in ("arithmetic", "countdown") else best_lrs(records, "arithmetic")
        if best is None:
            continue
        out["best_lr"][task] = best
        main = {}
        for m in GRID_METHODS:
            cell = held_out(cells.get((task, m, best[m]), {}))
            if not cell:
                continue
            row = {"lr": best[m], **cell_summary(cell)}
            bases = [("grpo", "vs_grpo"), ("grpo_4passes", "vs_grpo_passes")]
            if m == "sfpo_tr":  # trust-region SFPO is also measured against SFPO
                bases.append((HEADLINE, "vs_sfpo"))
            for base, key in bases:
                b = held_out(cells.get((task, base, best[base]), {}))
                if b and m != base:
                    row[key] = compare(b, cell)
            main[m] = row
        out["main"][task] = main
    return out


def headline(analysis: dict) -> tuple[dict, str]:
    """results.json's historical keys (SFPO against GRPO and GRPO-(K+1)), from the arithmetic comparison at
    each method's best lr once it exists, else from the sweep at the base lr (named in the second value)."""
    main = analysis["main"].get("arithmetic", {}).get(HEADLINE)
    if main and main.get("n", 0) >= 3:
        row, source = main, "arithmetic, each method at its best learning rate"
    else:
        row = analysis["sweep"].get("arithmetic", {}).get(f"{HEADLINE}@1e-04")
        row = row and {"vs_grpo": row.get("vs_grpo"), "vs_grpo_passes": row.get("vs_grpo_4passes")}
        source = "arithmetic sweep at lr 1e-4 (the comparison at each method's best lr has not run yet)"
    out = {}
    for kind, vs, key in RATIO_KEYS:
        c = (row or {}).get(vs)
        if not c:
            out[key] = None
            continue
        e = c[f"{kind}_ratio"]
        vals = [v for v in e["per_run"].values() if v is not None]
        out[key] = {"median": e["point"], "ci": e["ci"], "verdict": e["verdict"], "per_seed": e["per_run"],
                    "spread": [min(vals), max(vals)] if vals else None, "reached": e["reached"], "n": e["n"]}
        if kind == "wallclock":
            out[key]["reliable"] = c["wallclock_reliable"]
    return out, source


def _f(v, fmt="{:.3f}"):
    return "—" if v is None else fmt.format(v)


def _ci(ci, fmt="{:.2f}") -> str:
    if ci is None:
        return "no interval"
    return "[" + ", ".join("never" if v is None else fmt.format(v) for v in ci) + "]"


def _effect(e: dict, fmt="{:.2f}", reliable: bool = True) -> str:
    point = _f(e["point"], fmt) if e["point"] is not None else "never"
    note = "" if reliable else " ⚠ cores shared"
    return f"{point} {_ci(e['ci'], fmt)} {e['verdict']} (n={e['n']}){note}"


def write_report(records: list[dict], total: int, waiting: list[str], report: Path, meta: dict) -> dict:
    analysis = analyse(records)
    head, source = headline(analysis)
    cells = index(records)
    policies = {}
    for r in records:
        policies.setdefault(r["task"], {})[str(r["policy"])] = r["policy_info"]
    seeds = sorted({r["seed"] for r in records})
    partial = len(records) < total or bool(waiting)
    results = {"partial": partial, "records": len(records), "planned": total, "waiting": waiting,
               "seeds": seeds, "policies": policies, "headline_method": HEADLINE, "headline_source": source,
               **head, "kl_budget": KL_BUDGET, "lrs": list(LRS), "meta": meta, **analysis}
    report.mkdir(parents=True, exist_ok=True)
    (report / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")

    md = ["# Reproduction: SFPO vs GRPO vs GRPO with K+1 passes on the CPU testbed", "",
          "Generated by `benchmarks/reproduce.py` from the run records in `docs/reproduction/records/` "
          "(`python benchmarks/reproduce.py --analyse-only`); the commands are in `benchmarks/reproduce.sh`.", ""]
    if partial:
        md += [f"**Partial:** runs finished: {len(records)} of the {total} planned so far"
               + (f"; not planned yet: {'; '.join(waiting)}" if waiting else "") + ". Every number below is "
               "from the finished runs only, and will move as the grid completes.", ""]
    md += ["Ratios are baseline cost ÷ run cost to first reach the baseline's best validation accuracy (above 1: "
           "the run got there cheaper; `never`: it did not reach it, ranked below every ratio — also when the baseline "
           "never improved on its start, so there was nothing to reach). Each effect is "
           "paired (same starting policy, same seed) and comes with a 95% two-level bootstrap interval over "
           "policies × seeds (`sfpo.compare.bootstrap_ci`); the verdict says **within noise** whenever the "
           "interval includes no effect, and *too few runs* below 3 paired runs (one run has no interval). "
           "Runs are one thread each; a run whose CPU time was under "
           f"{SHARED_BELOW:.0%} of its wall time shared its core, and wall-clock ratios that involve such runs are "
           "marked ⚠ (unreliable). Rollout counts are unaffected by shared cores.", "",
           "## Findings (computed)", ""]
    md += [f"- {f}" for f in findings(results)]
    notes = report.parent / f"{report.name}_notes.md"
    if notes.exists():
        md += ["", notes.read_text().strip()]
    md += ["", "## Starting policies", "", "| task | warm-start seed | shipped | steps | probe pass@1 | sha256 "
           "(model.safetensors) |", "|---|---|---|---|---|---|"]
    for task, ps in sorted(policies.items()):
        for p, info in sorted(ps.items()):
            md.append(f"| {task} | {p} | {'yes' if info['shipped'] else 'no'} | {info['steps_trained']} | "
                      f"{info['probe_pass1']} | `{info['sha256'][:16]}…` |")
    plot_report(records, analysis, report)
    for task, main in analysis["main"].items():
        md += ["", f"## {task}: each method at its best learning rate", ""]
        if (report / f"{task}_best_lr.png").exists():
            md += [f"![{task}: validation curves at each method's best lr]({report.name}/{task}_best_lr.png)", ""]
        md += ["| method | lr | runs (policies) | best val | test of best | rollouts ratio vs GRPO | vs GRPO-4 | "
               "Δ best val vs GRPO | Δ test vs GRPO | wall-clock ratio vs GRPO | rollout / old log-probs / "
               "update (s) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for m, row in main.items():
            md.append(_main_row(m, row))
    if (report / "lr_sweep.png").exists():
        md += ["", f"![learning-rate sweeps]({report.name}/lr_sweep.png)"]
    for task, rows in analysis["sweep"].items():
        md += ["", f"## {task}: learning-rate sweep (ratios against the baseline at the same lr)", "",
               "| method @ lr | runs | best val [min, max] | test of best | rollouts ratio vs GRPO | vs GRPO-4 | "
               "Δ best val vs GRPO | wall-clock ratio vs GRPO | rollout / old log-probs / update (s) | α |",
               "|---|---|---|---|---|---|---|---|---|---|"]
        for name, row in rows.items():
            vg, vp = row.get("vs_grpo"), row.get("vs_grpo_4passes")
            ph = row["phase_s"]
            md.append(f"| {name} | {row['n']} | {_f(row['best_val'])} [{_f(row['best_val_range'][0])}, "
                      f"{_f(row['best_val_range'][1])}] | {_f(row['test_of_best'])} | "
                      f"{_effect(vg['rollouts_ratio']) if vg else '—'} | "
                      f"{_effect(vp['rollouts_ratio']) if vp else '—'} | "
                      f"{_effect(vg['best_val_diff'], '{:+.3f}') if vg else '—'} | "
                      f"{_effect(vg['wallclock_ratio'], reliable=vg['wallclock_reliable']) if vg else '—'} | "
                      f"{_f(ph['time/rollout'], '{:.2f}')} / {_f(ph['time/old_logprobs'], '{:.2f}')} / "
                      f"{_f(ph['time/update'], '{:.2f}')} | {_f(row['alpha'], '{:.2f}')} |")
    old = report / "record_2026-11-30.json"
    if old.exists():
        md += ["", "## The previous record (2026-11-30)", "",
               f"One policy × 3 seeds at lr 1e-4, before the policies shipped: `{old.relative_to(report.parent)}` "
               "(SFPO with the entropy switch; the numbers `sfpo demo` quotes). Its prose is kept in "
               "`docs/reproduction_notes.md`."]
    (report.parent / f"{report.name}.md").write_text("\n".join(md) + "\n")
    return results


COLORS = {"grpo": "tab:blue", "grpo_4passes": "tab:orange", "sfpo_noswitch": "tab:green", "sfpo_tr": "tab:red"}


def plot_report(records: list[dict], analysis: dict, report: Path) -> list[Path]:
    """PNGs beside the report: per task, the validation curves of each method at its best lr (each held-out
    run thin, the median over runs thick) against rollouts and against training time; and the lr sweeps."""
    from sfpo.plots import pyplot

    plt, cells, out = pyplot(), index(records), []
    for task, best in analysis["best_lr"].items():
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        for m in GRID_METHODS:
            runs = [r for seeds in held_out(cells.get((task, m, best[m]), {})).values() for r in seeds.values()]
            if not runs:
                continue
            n = min(len(r["val"]) for r in runs)
            for ax, col in zip(axes, (1, 2)):
                for r in runs:
                    ax.plot([v[col] for v in r["val"]], [v[3] for v in r["val"]], color=COLORS[m], lw=0.5, alpha=0.35)
                ax.plot([statistics.median(r["val"][i][col] for r in runs) for i in range(n)],
                        [statistics.median(r["val"][i][3] for r in runs) for i in range(n)], color=COLORS[m], lw=2,
                        label=f"{LABELS.get(m, m)}, lr {best[m]:.0e} ({len(runs)} runs)")
        axes[0].set(xlabel="rollouts", ylabel="validation accuracy (avg@4)", title=f"{task}: each method at its best lr")
        axes[1].set(xlabel="training time (s, one thread)", ylabel="validation accuracy (avg@4)",
                    title="the same against training time")
        for ax in axes:
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        out.append(report / f"{task}_best_lr.png")
        fig.savefig(out[-1], dpi=110)
        plt.close(fig)
    tasks = [t for t, rows in analysis["sweep"].items() if len({k.split("@")[1] for k in rows}) > 1]
    if tasks:
        fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.8), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            for m in GRID_METHODS:
                pts = sorted((float(k.split("@")[1]), row["best_val"]) for k, row in analysis["sweep"][task].items()
                             if k.split("@")[0] == m)
                if pts:
                    ax.plot(*zip(*pts), marker="o", color=COLORS[m], label=LABELS.get(m, m))
            ax.set(xscale="log", xlabel="learning rate", ylabel="best validation accuracy",
                   title=f"{task}: lr sweep (policy 0, median over its seeds)")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        out.append(report / "lr_sweep.png")
        fig.savefig(out[-1], dpi=110)
        plt.close(fig)
    return out


def _main_row(m: str, row: dict) -> str:
    vg, vp = row.get("vs_grpo"), row.get("vs_grpo_passes")
    ph = row["phase_s"]
    return (f"| {LABELS.get(m, m)} | {row['lr']:.0e} | {row['n']} ({len(row['policies'])}) | {_f(row['best_val'])} "
            f"| {_f(row['test_of_best'])} | {_effect(vg['rollouts_ratio']) if vg else '1'} | "
            f"{_effect(vp['rollouts_ratio']) if vp else ('1' if m == 'grpo_4passes' else '—')} | "
            f"{_effect(vg['best_val_diff'], '{:+.3f}') if vg else '0'} | "
            f"{_effect(vg['test_of_best_diff'], '{:+.3f}') if vg else '0'} | "
            f"{_effect(vg['wallclock_ratio'], reliable=vg['wallclock_reliable']) if vg else '1'} | "
            f"{_f(ph['time/rollout'], '{:.2f}')} / {_f(ph['time/old_logprobs'], '{:.2f}')} / "
            f"{_f(ph['time/update'], '{:.2f}')} |")


def findings(results: dict) -> list[str]:
    """Plain sentences computed from the intervals: an effect is claimed only when its interval excludes none."""
    out = [f"Headline ({LABELS[HEADLINE]} vs the baselines; {results['headline_source']}):"
           + ("" if any(results.get(k) for _, _, k in RATIO_KEYS) else " not measured yet.")]
    for kind, vs, key in RATIO_KEYS:
        b = results.get(key)
        if not b:
            continue
        base = "GRPO" if vs == "vs_grpo" else "GRPO with K+1 passes"
        words = {"higher": "SFPO cheaper", "lower": "SFPO costlier", "within noise": "within noise",
                 "not measurable": "not measurable", "too few runs": "too few runs for a verdict"}[b["verdict"]]
        unreliable = kind == "wallclock" and not b.get("reliable", True)
        point = "never (the median run did not reach it)" if b["median"] is None else f"{b['median']:.2f}×"
        out.append(f"{kind} to reach {base}'s best: {point} (95% CI {_ci(b['ci'])}"
                   f", {b['n']} runs, reached in {b['reached']}): **{words}**"
                   + (" — unreliable: the cores were shared during some of these runs" if unreliable else "") + ".")
    names = {"vs_grpo": "GRPO", "vs_grpo_passes": "GRPO-4", "vs_sfpo": "SFPO"}
    for task, main in results["main"].items():
        for m, row in main.items():
            for vs, base in names.items():
                c = None if m == "grpo" else row.get(vs)  # GRPO against GRPO-4 is GRPO-4's line read backwards
                if not c:
                    continue
                r, v, t = c["rollouts_ratio"], c["best_val_diff"], c["test_of_best_diff"]
                out.append(f"{task}, {LABELS.get(m, m)} (lr {row['lr']:.0e}) vs {base} (each at its best lr): "
                           f"rollouts to reach its best {'never' if r['point'] is None else format(r['point'], '.2f') + '×'} "
                           f"{_ci(r['ci'])} **{r['verdict']}**"
                           f"; best validation {_f(v['point'], '{:+.3f}')} {_ci(v['ci'], '{:+.3f}')} "
                           f"**{v['verdict']}**; test of the best {_f(t['point'], '{:+.3f}')} "
                           f"{_ci(t['ci'], '{:+.3f}')} **{t['verdict']}** ({r['n']} runs).")
    return out


def run_grid(args, out: Path, records_dir: Path, extra: list[str], env: dict) -> list[str]:
    """Run the grid's missing records, ``args.workers`` at a time, planning again after each one lands (runs at a
    best lr become plannable once a sweep is complete). A failed run is logged and left for the next invocation;
    the names of the failed runs are returned."""
    t0, new, failed = time.perf_counter(), 0, []
    flight: dict[cf.Future, str] = {}
    with cf.ThreadPoolExecutor(max_workers=args.workers) as pool:
        while True:
            runs, _ = plan(args.grid, args.seeds, load_records(records_dir))
            todo = [r for r in runs if _name(r) not in failed and _name(r) not in flight.values()
                    and not (records_dir / _name(r)).exists()]
            stop = (out / "STOP").exists()  # touch <out>/STOP: the runs in flight finish, no new one starts
            if stop and not flight:
                logger.info("%s exists: stopping; remove it to go on", out / "STOP")
                return failed
            while (todo and not stop and len(flight) < args.workers
                   and not (args.max_runs and new + len(flight) >= args.max_runs)):
                sp = todo.pop(0)
                if _claim(out, _name(sp)):  # another harness process may be running it
                    flight[pool.submit(run_one, sp, out, records_dir, extra, args.threads, env,
                                       args.workers)] = _name(sp)
            if not flight:
                return failed
            done, _ = cf.wait(flight, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                name = flight.pop(fut)
                (out / (name + ".claim")).unlink(missing_ok=True)
                try:
                    fut.result()
                    new += 1
                except Exception as e:  # noqa: BLE001 — one broken run must not stop the others
                    failed.append(name)
                    logger.error("%s failed; the grid goes on without it: %s", name, e)
            have = sum((records_dir / _name(r)).exists() for r in runs)
            logger.info("progress: %d of %d planned runs have records (%d new, %d in flight, %.0f s)", have,
                        len(runs), new, len(flight), time.perf_counter() - t0)


def _claim(out: Path, name: str) -> bool:
    """Take ``name`` for this process, unless a live harness process holds it: several harness processes (say
    one per core, or one started by hand beside a running grid) then share a grid without running a run twice."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / (name + ".claim")
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(path.read_text() or 0), 0)
                return False  # held by a live process
            except (ProcessLookupError, ValueError):
                path.unlink(missing_ok=True)  # its process is gone: a stale claim
                continue
            except PermissionError:
                return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def _name(sp: dict) -> str:
    return record_name(sp["task"], sp["method"], sp["lr"], sp["policy"], sp["seed"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", default="issue12", choices=["quick", "main", "ablations", "hard", "issue12"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the main/ablations/hard grids")
    p.add_argument("--quick", action="store_true", help="grid=quick, 1 seed, 30 steps: ≤15 min on 2 cores")
    p.add_argument("--out", default=str(ROOT / "runs" / "reproduce"), help="run folders (for resuming a run)")
    p.add_argument("--records", default=None, help=f"run records (default {RECORDS.relative_to(ROOT)}; "
                                                    "with --quick: <out>/records)")
    p.add_argument("--report", default=None, help=f"results.json goes here, the markdown beside it "
                                                   f"(default {REPORT.relative_to(ROOT)}; with --quick: <out>/report)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (1: runs are comparable on a "
                                                          "shared machine and CPU time tells sharing apart)")
    p.add_argument("--analyse-only", action="store_true", help="only rebuild the report from the records")
    p.add_argument("--workers", type=int, default=1, help="runs in flight at once, one core each (2 on a "
                                                          "2-core machine: twice the runs per hour; each record "
                                                          "says how many ran beside it)")
    p.add_argument("--max-runs", type=int, default=0, help="stop after this many new runs (0: the whole grid)")
    p.add_argument("overrides", nargs="*", help="config overrides for every run (e.g. steps=80)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    if args.quick:
        args.grid, out = "quick", out.with_name(out.name + "_quick")
    records_dir = Path(args.records) if args.records else (out / "records" if args.quick else RECORDS)
    report = Path(args.report) if args.report else (out / "report" if args.quick else REPORT)
    extra = (QUICK if args.quick else []) + args.overrides
    env = _environment()
    failed = [] if args.analyse_only else run_grid(args, out, records_dir, extra, env)
    runs, waiting = plan(args.grid, args.seeds, load_records(records_dir))
    names = {record_name(r["task"], r["method"], r["lr"], r["policy"], r["seed"]) for r in runs}
    records = [r for r in load_records(records_dir)
               if record_name(r["task"], r["method"], r["lr"], r["policy"], r["seed"]) in names]
    meta = {"command": " ".join(["python", *sys.argv]), "grid": args.grid, "overrides": extra, **env}
    results = write_report(records, len(runs), waiting, report, meta)
    print(json.dumps({"grid": args.grid, "records": len(records), "planned": len(runs), "partial": results["partial"],
                      **{k: (results.get(k) or {}).get("median") for _, _, k in RATIO_KEYS}, "report": str(report),
                      "failed": failed}))
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed: {', '.join(failed)} (their logs: <out>/<run>/stderr.log)")


if __name__ == "__main__":
    main()
