"""Reproduction harness: does SFPO reach GRPO's best with fewer rollouts, is it the reposition or just more
passes over the batch, and does it hold across starting policies, seeds, learning rates and tasks? Runs GRPO,
GRPO with K+1 passes, SFPO, trust-region SFPO and the paper's ablations on the CPU testbed, each run in its own
process, and compares them with paired bootstrap intervals over policies × seeds.

    sfpo reproduce --quick                          # ≤15 min on 2 cores: a smoke run
    sfpo reproduce --grid issue12 --workers 2       # the grid of docs/reproduction.md (≈20 CPU-h)
    sfpo reproduce --analyse-only                   # the report, from the committed records
    sfpo reproduce --grid issue24 --analyse-only    # issue 24's report (docs/reproduction/beyond_sfpo.md)

Every finished run leaves a small JSON record (validation curve, test accuracy, phase times, wall and CPU
time, the starting policy's sha256; no weights) in --records (default docs/reproduction/records/), and a run
whose record exists is never recomputed: commit records as they land and the grid resumes on any machine,
in any later session (an interrupted run resumes from its checkpoint under --out). Several harness processes
may share one grid (each claims its run under --out). The report
(docs/reproduction.md + results.json) is regenerated from the records alone. Prints one JSON line last.

This module runs the grid; what the grid is lives in sfpo.reproduce.grid, the reports in sfpo.reproduce.report
and sfpo.reproduce.beyond. `python benchmarks/reproduce.py` is the same command.
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
from pathlib import Path

import sfpo
from sfpo.machine import cpu_snapshot
from sfpo.reproduce.beyond import write_beyond_report
from sfpo.reproduce.grid import (CHECKOUT, CONFIG, IN_CHECKOUT, OUT, QUICK, RECORDS, REPORT, SHARED_BELOW, TASKS,
                                 load_records, name_of, plan)
from sfpo.reproduce.report import RATIO_KEYS, write_report

GRIDS = ("quick", "main", "ablations", "hard", "issue12", "issue24")
PACKAGE_PARENT = Path(sfpo.__file__).resolve().parents[1]  # each run's process imports this very package

logger = logging.getLogger("reproduce")

# ---------------------------------------------------------------------------------------------- one run
_POLICY_LOCK = threading.Lock()


def _policy(task: str, policy: int, records: Path) -> dict:
    """Build (or find) the starting policy of ``task`` for warm-start seed ``policy``; its identity.

    A warm-start's bits follow the CPU's kernels, so a policy built on another machine differs. The grid's
    policies that do not ship with the package are kept beside the records (``<records>/../policies``, committed
    with them) and restored into the testbed cache before use, so that a grid continued on a fresh machine starts
    its remaining runs from the same bits; and a run never starts from a build other than the one earlier records
    of the same policy were made from (they could not be paired)."""
    from sfpo.config import load_config
    from sfpo.testbed import SHIPPED_DIR, default_cache_dir, file_sha256, warm_start

    store = records.parent / "policies"
    for kept in sorted(store.glob("*/model.safetensors")):  # restore the stored builds over any local ones
        local = default_cache_dir() / kept.parent.name
        if not (local / "model.safetensors").exists() or file_sha256(local / "model.safetensors") != file_sha256(kept):
            logger.info("testbed policy: restoring the stored %s into %s", kept.parent, local)
            shutil.rmtree(local, ignore_errors=True)
            shutil.copytree(kept.parent, local)
    cfg = load_config(CONFIG, TASKS[task] + [f"model.warmup_seed={policy}"])
    path = warm_start(cfg.task.name, cfg.task.kwargs, seed=policy, size=cfg.model.testbed_size, progress=False)
    shipped = path.parent == SHIPPED_DIR
    if not shipped and not (store / path.name).exists():
        shutil.copytree(path, store / path.name)
        logger.warning("testbed policy: stored %s; commit it with the records, so that the grid's other runs from "
                       "it start from the same bits on any machine", store / path.name)
    info = json.loads((path / "sfpo_testbed.json").read_text())
    ident = {"folder": path.name, "shipped": shipped, "sha256": file_sha256(path / "model.safetensors"),
             "steps_trained": info.get("steps_trained"), "probe_pass1": info.get("probe_pass1")}
    other = {r["policy_info"]["sha256"] for r in load_records(records) if r["policy_info"]["folder"] == path.name}
    if other - {ident["sha256"]}:
        raise RuntimeError(f"starting policy {path} (sha256 {ident['sha256'][:16]}…) is not the build that earlier "
                           f"records of it were made from ({', '.join(sorted(x[:16] + '…' for x in other))}): "
                           f"their runs could not be paired with this one. Put that build into {store / path.name} "
                           f"(it restores from there), or move those records aside to start the policy afresh")
    return ident


def _environment() -> dict:
    import torch

    from sfpo.testbed import KERNEL_KNOBS

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"python": platform.python_version(), "torch": torch.__version__, "cpu": cpu, "cpus": os.cpu_count(),
            "capability": torch.backends.cpu.get_cpu_capability(),
            "kernels": {k: os.environ[k] for k in KERNEL_KNOBS if os.environ.get(k)},
            "sfpo": sfpo.__version__, "commit": _commit()}


def _commit() -> str:
    """The checkout's commit ("" for an installed package: no checkout, or git missing)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=CHECKOUT, capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return ""


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

    name = name_of(sp)
    if (records / name).exists():
        return json.loads((records / name).read_text())
    with _POLICY_LOCK:  # two workers never build the same policy at once
        policy = _policy(sp["task"], sp["policy"], records)  # built here (cached), so the run's own time excludes it
    run_dir = out / name.removesuffix(".json")
    cmd = [sys.executable, "-m", "sfpo.cli", "train", str(CONFIG), *sp["overrides"], *extra,
           f"seed={sp['seed']}", f"threads={threads}", f"output_dir={run_dir}", "log.progress=false",
           "log.tensorboard=false", "log.plot=false", "checkpoint_every=10"]
    logger.info("%s: %s", name, " ".join(cmd[3:]))
    run_dir.mkdir(parents=True, exist_ok=True)
    resumed = _last_checkpoint(run_dir)  # the trainer resumes from it; wall/CPU time then cover the rest only
    busy0 = cpu_snapshot()["busy"]
    pythonpath = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")]))
    code, wall, cpu = run_timed(cmd, {**os.environ, "PYTHONPATH": pythonpath}, run_dir / "stderr.log")
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


def run_grid(args, out: Path, records_dir: Path, extra: list[str], env: dict) -> list[str]:
    """Run the grid's missing records, ``args.workers`` at a time, planning again after each one lands (runs at a
    best lr become plannable once a sweep is complete). A failed run is logged and left for the next invocation;
    the names of the failed runs are returned."""
    t0, new, failed = time.perf_counter(), 0, []
    flight: dict[cf.Future, str] = {}
    with cf.ThreadPoolExecutor(max_workers=args.workers) as pool:
        while True:
            runs, _ = plan(args.grid, args.seeds, load_records(records_dir))
            todo = [r for r in runs if name_of(r) not in failed and name_of(r) not in flight.values()
                    and not (records_dir / name_of(r)).exists()]
            stop = (out / "STOP").exists()  # touch <out>/STOP: the runs in flight finish, no new one starts
            if stop and not flight:
                logger.info("%s exists: stopping; remove it to go on", out / "STOP")
                return failed
            while (todo and not stop and len(flight) < args.workers
                   and not (args.max_runs and new + len(flight) >= args.max_runs)):
                sp = todo.pop(0)
                if _claim(out, name_of(sp)):  # another harness process may be running it
                    flight[pool.submit(run_one, sp, out, records_dir, extra, args.threads, env,
                                       args.workers)] = name_of(sp)
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
            have = sum((records_dir / name_of(r)).exists() for r in runs)
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


def parser(prog: str = "sfpo reproduce") -> argparse.ArgumentParser:
    checkout = IN_CHECKOUT and "this checkout's "
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", default="issue12", choices=GRIDS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the main/ablations/hard grids")
    p.add_argument("--quick", action="store_true", help="grid=quick, 1 seed, 30 steps: ≤15 min on 2 cores")
    p.add_argument("--out", default=str(OUT), help=f"run folders, for resuming a run (default {OUT})")
    p.add_argument("--records", default=None, help=f"run records (default {checkout or ''}{RECORDS}; "
                                                    "with --quick: <out>/records)")
    p.add_argument("--report", default=None, help=f"results.json goes here, the markdown beside it "
                                                   f"(default {checkout or ''}{REPORT}; with --quick: <out>/report)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (1: runs are comparable on a "
                                                          "shared machine and CPU time tells sharing apart)")
    p.add_argument("--analyse-only", action="store_true", help="only rebuild the report from the records")
    p.add_argument("--workers", type=int, default=1, help="runs in flight at once, one core each (2 on a "
                                                          "2-core machine: twice the runs per hour; each record "
                                                          "says how many ran beside it)")
    p.add_argument("--max-runs", type=int, default=0, help="stop after this many new runs (0: the whole grid)")
    p.add_argument("overrides", nargs="*", help="config overrides for every run (e.g. steps=80)")
    return p


def regenerate_command(args: argparse.Namespace) -> str:
    """The command that rebuilds this report from its records: what the report says made it. The same whatever
    machine, commit or folder it ran from, so a report regenerated from the same records is the same bytes."""
    parts = ["sfpo reproduce", "--quick" if args.quick else f"--grid {args.grid}"]
    if args.seeds != [0, 1, 2]:
        parts.append("--seeds " + " ".join(map(str, args.seeds)))
    return " ".join(parts + ["--analyse-only", *args.overrides])


def main(argv: list[str] | None = None, prog: str = "sfpo reproduce") -> int:
    args = parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    if args.quick:
        args.grid, out = "quick", out.with_name(out.name + "_quick")
    records_dir = Path(args.records) if args.records else (out / "records" if args.quick else RECORDS)
    report = Path(args.report) if args.report else (out / "report" if args.quick else REPORT)
    extra = (QUICK if args.quick else []) + args.overrides
    failed = [] if args.analyse_only else run_grid(args, out, records_dir, extra, _environment())
    runs, waiting = plan(args.grid, args.seeds, load_records(records_dir))
    names = {name_of(r) for r in runs}
    records = [r for r in load_records(records_dir) if name_of(r) in names]
    # every record carries the machine and commit that made it; the report names only how to rebuild it
    meta = {"command": regenerate_command(args), "grid": args.grid, "overrides": extra}
    if args.grid == "issue24":  # its own report beside the main one (beyond_sfpo.md, results_beyond.json)
        # every record: the comparison needs each method's best lr, chosen on the main grid's sweeps
        results = write_beyond_report(load_records(records_dir), len(records), len(runs), waiting, report, meta)
        line = {"answer": results["answer"]}
    else:
        results = write_report(records, len(runs), waiting, report, meta)
        line = {k: (results.get(k) or {}).get("median") for _, _, k in RATIO_KEYS}
    print(json.dumps({"grid": args.grid, "records": len(records), "planned": len(runs), "partial": results["partial"],
                      **line, "report": str(report), "failed": failed}))
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)} (their logs: {out}/<run>/stderr.log); run the "
              "same command again to retry them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(prog="python -m sfpo.reproduce.harness"))
