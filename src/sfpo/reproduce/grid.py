"""The reproduction grid: what each run is (task, method, learning rate, starting policy, seed → trainer
overrides), how each method's learning rate is chosen, and the order the issue-12 grid runs in. Read by the
harness (sfpo.reproduce.harness), which runs it, and by its reports (sfpo.reproduce.report, .beyond)."""

from __future__ import annotations

import json
from pathlib import Path

from sfpo.shipped import CONFIGS_DIR

# The project's checkout (src/sfpo/reproduce/grid.py → ../../..): the committed records and report live there.
# An installed package has no checkout: its records and report default to folders under the working directory.
CHECKOUT = Path(__file__).resolve().parents[3]
IN_CHECKOUT = (CHECKOUT / "docs" / "reproduction" / "records").is_dir()
CONFIG = CONFIGS_DIR / "reproduce.yaml"  # the checkout's configs/, or the wheel's copy
# the committed records and report in a checkout; elsewhere, folders under the working directory
RECORDS = CHECKOUT / "docs" / "reproduction" / "records" if IN_CHECKOUT else Path("reproduction") / "records"
REPORT = CHECKOUT / "docs" / "reproduction" if IN_CHECKOUT else Path("reproduction")
OUT = CHECKOUT / "runs" / "reproduce" if IN_CHECKOUT else Path("runs") / "reproduce"
SFPO = ["algorithm.name=sfpo", "algorithm.inner_steps=3", "algorithm.alpha=0.8"]
KL_BUDGET = 0.0025  # trust-region SFPO's budget; see docs/reproduction.md ("Trust-region SFPO") for its choice
METHODS = {
    "grpo": ["algorithm.name=grpo"],
    "grpo_4passes": ["algorithm.name=grpo", "algorithm.passes=4"],
    "sfpo": SFPO + ["algorithm.switch=entropy"],
    "sfpo_noswitch": SFPO + ["algorithm.switch=never"],
    "sfpo_tr": SFPO + ["algorithm.switch=never", "algorithm.alpha_rule=kl_budget", f"algorithm.kl_budget={KL_BUDGET}"],
    **{f"sfpo_a{a}": SFPO + [f"algorithm.alpha={a}", "algorithm.switch=never"] for a in (0.2, 0.5, 1.0, 1.25, 1.5)},
    **{f"sfpo_k{k}": SFPO + [f"algorithm.inner_steps={k}", "algorithm.switch=never"] for k in (1, 5, 7)},
    "sfpo_k7_a0.2": SFPO + ["algorithm.inner_steps=7", "algorithm.alpha=0.2", "algorithm.switch=never"],
    "sfpo_reset": SFPO + ["algorithm.optimizer_state=reset", "algorithm.switch=never"],
    "sfpo_restore": SFPO + ["algorithm.optimizer_state=restore", "algorithm.switch=never"],
    "sfpo_noslow": SFPO + ["algorithm.slow_pass=false", "algorithm.switch=never"],
    **{f"sfpo_mom{mu}": SFPO + [f"algorithm.outer_momentum={mu}", "algorithm.switch=never"] for mu in (0.5, 0.9)},
}
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
    # issue 24's plateau regime: arithmetic trained 5× as long (600 steps, 153,600 rollouts) so that GRPO can
    # plateau; the criterion is fixed before any run (PLATEAU below)
    "arith_long": ["steps=600"],
}
GRID_METHODS = ("grpo", "grpo_4passes", "sfpo_noswitch", "sfpo_tr")
LRS = (1e-5, 3e-5, 1e-4, 3e-4)  # a 30× span around the base 1e-4
QUICK = ["steps=30", "eval.every=5", "eval.num_prompts=64", "eval.test_num_prompts=64"]
SHARED_BELOW = 0.8  # CPU time ÷ wall time of a one-thread run below this: the cores were shared


# ------------------------------------------------------------------------------------------------ the grid
def run_key(task: str, method: str, lr: float) -> str:
    return f"{task}__{method}__lr{lr:.0e}"


def record_name(task: str, method: str, lr: float, policy: int, seed: int) -> str:
    return f"{run_key(task, method, lr)}__p{policy}s{seed}.json"


def name_of(run: dict) -> str:
    """The record file name of a run's spec or of its record."""
    return record_name(run["task"], run["method"], run["lr"], run["policy"], run["seed"])


def spec(task: str, method: str, lr: float, policy: int, seed: int) -> dict:
    return {"task": task, "method": method, "lr": lr, "policy": policy, "seed": seed,
            "overrides": METHODS[method] + TASKS[task] + [f"optim.lr={lr}", f"model.warmup_seed={policy}"]}


SWEPT = ("arithmetic", "countdown")  # the tasks with an lr sweep; every other task runs at arithmetic's best lrs


def lrs_of(task: str) -> str:
    """The task whose sweep chooses ``task``'s learning rates: its own if it was swept, else arithmetic's (the
    untuned task and the generation-heavy setting are compared at lrs nobody chose on them)."""
    return task if task in SWEPT else "arithmetic"


# Issue 24: does the direction of the reposition matter? α through 1 at arithmetic's lr (every method's best there);
# α = 0.8 is sfpo_noswitch and α = 1.0 is grpo_4passes (the same bits), so their records are reused.
ALPHA_SWEEP = {0.5: "sfpo_a0.5", 0.8: "sfpo_noswitch", 1.0: "grpo_4passes", 1.25: "sfpo_a1.25", 1.5: "sfpo_a1.5"}
ALPHA_SWEEP_LR = 3e-5

# Outer momentum: μ × lr swept on the selection unit (momentum lengthens the effective step by about 1/(1 − μ), so
# its best lr is likely lower than SFPO's); the best (μ, lr) then runs on the held-out units of arithmetic and, at
# arithmetic's choice, countdown, against GRPO-4 and SFPO at their own best lrs.
MOMENTA = (0.5, 0.9)
MOMENTUM_LRS = (3e-6, 1e-5, 3e-5)
# The plateau: GRPO has plateaued at the first evaluation from which its validation accuracy, smoothed over the
# last 4 evaluations (20 steps), has not risen by more than `min_gain` over the previous `window` steps. Fixed
# here before any long run was looked at; "rollouts to reach GRPO's best" is reported only for runs where it held.
PLATEAU = {"window": 100, "min_gain": 0.01, "smooth": 4}

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
        out[m] = _argmax(scores)
    return out


def _argmax(scores: dict[float, float]) -> float:
    """The learning rate with the highest score; the smaller lr on a tie."""
    return max(scores, key=lambda lr: (scores[lr], -lr))


def sweep_stability(records: list[dict], task: str) -> dict[str, dict] | None:
    """How stable the choice of each method's lr is: the lr each of policy 0's sweep seeds would choose on its
    own, and the one the mean best validation over those seeds would choose. Only seeds that ran every lr count;
    None until a seed besides the selection unit's has. The choice itself stays the selection unit's."""
    cells = index(records)
    seeds = [s for s in sorted({s for (t, m, _), c in cells.items() if t == task for s in c.get(SELECT[0], {})})
             if all(s in cells.get((task, m, lr), {}).get(SELECT[0], {}) for m in GRID_METHODS for lr in LRS)]
    if SELECT[1] not in seeds or len(seeds) < 2:
        return None
    out, chosen = {}, best_lrs(records, task)
    for m in GRID_METHODS:
        per = {s: {lr: cells[(task, m, lr)][SELECT[0]][s]["best_val"] for lr in LRS} for s in seeds}
        mean = {lr: sum(per[s][lr] for s in seeds) / len(seeds) for lr in LRS}
        out[m] = {"chosen": chosen[m], "per_seed": {s: _argmax(v) for s, v in per.items()},
                  "by_mean": _argmax(mean), "mean_best_val": mean}
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
    if grid == "issue24":
        return plan_issue24(records)
    if grid != "issue12":
        raise SystemExit(f"unknown grid {grid!r}")
    # In order of what each run adds: a task's lr sweep (selection unit), then its comparison at each method's
    # best lr (3 policies × 3 seeds); arithmetic first, then countdown, then the untuned task and the
    # generation-heavy setting (1 policy × 3 seeds at arithmetic's lrs), and last the sweeps' second seed
    # (how stable the choice of lr is).
    n, runs = len(GRID_METHODS), []
    for task in SWEPT:
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
        name = name_of(r)
        if name not in seen:
            seen.add(name)
            ordered.append(r)
    return ordered, waiting



def momentum_choice(records: list[dict]) -> tuple[float, float] | None:
    """The (μ, lr) with the highest best validation accuracy in the momentum sweep on the selection unit
    (arithmetic); None until every (μ, lr) has a record. Ties: the smaller μ, then the smaller lr."""
    cells = index(records)
    scores = {}
    for mu in MOMENTA:
        for lr in MOMENTUM_LRS:
            rec = cells.get(("arithmetic", f"sfpo_mom{mu}", lr), {}).get(SELECT[0], {}).get(SELECT[1])
            if rec is None:
                return None
            scores[(mu, lr)] = rec["best_val"]
    return max(scores, key=lambda k: (scores[k], -k[0], -k[1]))


def plan_issue24(records: list[dict]) -> tuple[list[dict], list[str]]:
    """Issue 24, in order of what each part answers: (1) α through 1 on arithmetic's held-out units (α > 1, the
    new question, first), its first seed over all 3 policies; (2) the outer-momentum sweep on the selection unit,
    so that both questions have an answer early; (3) the α sweep's other seeds; (4) the chosen momentum on the
    held-out units of arithmetic and countdown; (5) the plateau regime (policy 0 × 3 seeds, 600 steps)."""
    waiting: list[str] = []
    alpha = [spec("arithmetic", ALPHA_SWEEP[a], ALPHA_SWEEP_LR, p, s) for s in SEEDS for p in POLICIES
             for a in (1.5, 1.25, 0.5, 0.8, 1.0)]
    first = len(POLICIES) * len(ALPHA_SWEEP)
    runs = alpha[:first]
    runs += [spec("arithmetic", f"sfpo_mom{mu}", lr, *SELECT) for lr in reversed(MOMENTUM_LRS) for mu in MOMENTA]
    runs += alpha[first:]
    choice = momentum_choice(records)
    best = {t: best_lrs(records, t) for t in SWEPT}
    if choice is None:
        waiting.append(f"outer momentum at its chosen (μ, lr) on {len(POLICIES) * len(SEEDS)} held-out units of "
                       f"{' and '.join(SWEPT)}: after the momentum sweep")
        variant = None
    else:
        mu, lr = choice
        variant = (f"sfpo_mom{mu}", lr)
        runs += [spec(t, m, lr_, p, s) for t in SWEPT for s in SEEDS for p in POLICIES
                 for m, lr_ in ((variant[0], lr), ("grpo_4passes", best[t]["grpo_4passes"]),
                                ("sfpo_noswitch", best[t]["sfpo_noswitch"]))]
    long = [("grpo", best["arithmetic"]["grpo"]), ("grpo_4passes", best["arithmetic"]["grpo_4passes"]),
            ("sfpo_noswitch", best["arithmetic"]["sfpo_noswitch"])] + ([variant] if variant else [])
    runs += [spec("arith_long", m, lr, 0, s) for s in SEEDS for m, lr in long]
    if variant is None:
        waiting.append("the plateau runs of the best new variant: after the momentum sweep")
    # arithmetic's held-out GRPO-4 and SFPO are both α-sweep points (α = 1, 0.8) and momentum's baselines: plan
    # each run once, so "n of N planned" counts runs, not mentions
    return list({name_of(r): r for r in runs}.values()), waiting


# ------------------------------------------------------------------------------------------- records
def load_records(records: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(records.glob("*.json"))] if records.exists() else []


def index(records: list[dict]) -> dict[tuple, dict[int, dict[int, dict]]]:
    """(task, method, lr) → policy → seed → record."""
    cells: dict[tuple, dict[int, dict[int, dict]]] = {}
    for r in records:
        cells.setdefault((r["task"], r["method"], r["lr"]), {}).setdefault(r["policy"], {})[r["seed"]] = r
    return cells
