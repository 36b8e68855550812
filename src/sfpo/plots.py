"""Learning-curve PNGs from metrics.jsonl files: one run, or several runs compared (mean ± spread over seeds).

Reads only what the trainer wrote; matplotlib is imported lazily with the headless Agg backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from sfpo.metrics import read_metrics

__all__ = ["plot_run", "plot_compare", "curve", "pyplot"]


def curve(records: list[dict], x: str, y: str) -> tuple[list[float], list[float]]:
    pts = [(r[x], r[y]) for r in records if r.get(y) is not None and r.get(x) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """Validation accuracy and training reward of one run; written beside its metrics."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot(*curve(records, "step", "val/accuracy"), marker="o", ms=3)
    axes[0].set(xlabel="training step", ylabel="validation accuracy (avg@k)", title="validation")
    axes[1].plot(*curve(records, "step", "reward"), lw=1)
    axes[1].set(xlabel="training step", ylabel="mean reward", title="training reward")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path) if path else run_dir / "learning_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_compare(runs: dict[str, Sequence[str | Path]], path: str | Path, reference: float | None = None,
                 metric: str = "val/accuracy") -> Path:
    """One line per method against step, rollouts and training wall-clock; several seeds → mean with a
    min–max band (validation points share steps across seeds of a method)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, dirs in runs.items():
        series = [read_metrics(d) for d in dirs]
        for ax, x in zip(axes, ("step", "rollouts", "time/train_elapsed")):
            xs_all, ys_all = [], []
            for recs in series:
                # step-0 records hold no counters; treat them as zero
                recs = [{**r, "rollouts": r.get("rollouts", 0.0), "time/train_elapsed": r.get("time/train_elapsed", 0.0)}
                        for r in recs]
                xs, ys = curve(recs, x, metric)
                xs_all.append(xs)
                ys_all.append(ys)
            n = min(len(v) for v in ys_all) if ys_all else 0
            if n == 0:
                continue
            xm = [sum(v[i] for v in xs_all) / len(xs_all) for i in range(n)]
            ym = [sum(v[i] for v in ys_all) / len(ys_all) for i in range(n)]
            (line,) = ax.plot(xm, ym, label=f"{name} (n={len(series)})", marker="o", ms=2)
            if len(series) > 1:
                lo = [min(v[i] for v in ys_all) for i in range(n)]
                hi = [max(v[i] for v in ys_all) for i in range(n)]
                ax.fill_between(xm, lo, hi, alpha=0.2, color=line.get_color())
    labels = {"step": "training step", "rollouts": "rollouts (sampled responses)",
              "time/train_elapsed": "training wall-clock (s)"}
    for ax, x in zip(axes, labels):
        if reference is not None:
            ax.axhline(reference, color="gray", ls="--", lw=1, label="GRPO best")
        ax.set(xlabel=labels[x], ylabel=metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
