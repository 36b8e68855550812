"""Run (one process, or two under ``accelerate launch --use_deepspeed``) by test_trl_deepspeed.py: SFPOTrainer and
GRPOTrainer under real DeepSpeed ZeRO on DeepSpeed's CPU accelerator (gloo; on a GPU machine, CUDA). Each scenario
trains the tiny TRL setup and reports max abs differences of the full fp32 masters and of the module weights; rank 0
writes them as JSON.

    python deepspeed_worker.py DS_CONFIG_JSON OUT_DIR RESULT_JSON SCENARIO[,SCENARIO...]

Scenarios: ``alpha_one`` (≡ GRPO with num_iterations=K+1), ``alpha_zero`` (≡ plain GRPO), ``reposition`` (α=0.8
against GRPO whose fast-pass end is repositioned by this file through DeepSpeed's public fp32-parameter API, plus
the float64 formula), ``resume`` (mid-cycle resume from DeepSpeed checkpoints), ``replicas`` (ranks agree).
"""

import json
import os
import subprocess
import sys

import ds_cpu

ON_CPU = ds_cpu.setup()

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from sfpo.integrations.trl import SFPOConfig, SFPOTrainer  # noqa: E402
from tiny_trl import end_distributed_run, train  # noqa: E402

DS = json.loads(sys.argv[1])  # the DeepSpeed config; under `accelerate launch --use_deepspeed` the same file's
OUT, RESULT = sys.argv[2], sys.argv[3]
STAGE, BF16 = DS["zero_optimization"]["stage"], DS.get("bf16", {}).get("enabled", False)
# one training step: K+1 = 3 passes × 2 optimizer steps (2 micro-steps each)
COMMON = dict(use_cpu=False, bf16=BF16, steps_per_generation=4, max_steps=6)
if os.environ.get("ACCELERATE_USE_DEEPSPEED") != "true":  # else `accelerate launch --use_deepspeed` brought DS
    COMMON["deepspeed"] = DS
K, ALPHA = 2, 0.8
if not ON_CPU:  # the GPU check (benchmarks/gpu_check_deepspeed.sh): the bit-identities need deterministic kernels
    torch.use_deterministic_algorithms(True, warn_only=True)


def run(cls, cfg, name, **overrides):
    return train(cls, cfg, os.path.join(OUT, name), **{**COMMON, **overrides})


def named_params(trainer):
    return list(trainer.model_wrapped.module.named_parameters())


def full_state(trainer) -> dict[str, torch.Tensor]:
    """Full fp32 masters (DeepSpeed's public API, gathered over ranks) and the module's full weights."""
    from deepspeed import zero
    from deepspeed.utils import safe_get_full_fp32_param

    out = {}
    for n, p in named_params(trainer):
        out["master/" + n] = safe_get_full_fp32_param(p).detach().float().clone()
    params = [p for _, p in named_params(trainer)]
    with zero.GatheredParameters(params, enabled=STAGE == 3):
        for n, p in named_params(trainer):
            out["module/" + n] = p.detach().float().clone()
    return out


def max_diff(a, b) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


class ManualReposition(TrainerCallback):
    """On a plain GRPO run with num_iterations=K+1: θ0 at each training step's start, and at the end of pass K the
    repositioned θ̃ = θK.lerp(θ0, 1 − α) (the same float op as the core's) written through DeepSpeed's public API
    (fp32 masters by ``safe_set_full_fp32_param``, ZeRO-3 module partitions through ``GatheredParameters``)."""

    def __init__(self, steps_per_pass, passes):
        self.per_pass, self.passes, self.trainer, self.theta0 = steps_per_pass, passes, None, None

    def on_optimizer_step(self, args, state, control, **kwargs):
        from deepspeed import zero
        from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param

        done = state.global_step + 1  # optimizer steps finished, this one included
        if done % (self.per_pass * self.passes) == self.per_pass * K:
            params = [p for _, p in named_params(self.trainer)]
            tilde = [safe_get_full_fp32_param(p).lerp(a, 1.0 - ALPHA) for p, a in zip(params, self.theta0)]
            for p, t in zip(params, tilde):
                safe_set_full_fp32_param(p, t)
            with zero.GatheredParameters(params, modifier_rank=0, enabled=STAGE == 3):
                for p, t in zip(params, tilde):
                    p.data.copy_(t.to(p.dtype).view_as(p.data))

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % (self.per_pass * self.passes) == 0:
            self.snapshot()

    def snapshot(self):
        from deepspeed.utils import safe_get_full_fp32_param

        self.theta0 = [safe_get_full_fp32_param(p).clone() for _, p in named_params(self.trainer)]


class ManualGRPO(GRPOTrainer):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.manual = next(c for c in self.callback_handler.callbacks if isinstance(c, ManualReposition))
        self.manual.trainer = self

    def training_step(self, model, inputs, num_items_in_batch):
        if self.manual.theta0 is None:
            self.manual.snapshot()  # θ0 of the first step: after DeepSpeed built its masters
        return super().training_step(model, inputs, num_items_in_batch)


class RecordingSFPO(SFPOTrainer):
    """Records, per repositioning: the local masters before (θK) and after (θ̃), the anchor (θ0), and whether the
    module weights right after the refresh equal the masters cast to their dtype."""

    records: list = []

    def _slow_fast(self):
        fresh = self.sfpo is None
        update = super()._slow_fast()
        if fresh:
            reposition, refresh = update.reposition, self._zero.refresh

            def recorded_reposition():
                before = [m.detach().clone() for m in self._zero.masters]
                reposition()
                self.records.append({"theta_k": before, "theta0": [a.clone() for a in update.anchor.tensors],
                                     "tilde": [m.detach().clone() for m in self._zero.masters]})

            def recorded_refresh():
                refresh()
                s = full_state(self)
                self.records[-1]["module_vs_master"] = max(
                    (s["module/" + n] - s["master/" + n].to(p.dtype).float()).abs().max().item()
                    for n, p in named_params(self))

            update.reposition, self._zero.refresh = recorded_reposition, recorded_refresh
        return update


def scenario_alpha_one():
    grpo = full_state(run(GRPOTrainer, GRPOConfig, "grpo3", num_iterations=K + 1))
    sfpo = run(SFPOTrainer, SFPOConfig, "sfpo_a1", inner_steps=K, alpha=1.0, lr_stepping="optimizer_step")
    drift = [h["sfpo/drift_norm"] for h in sfpo.state.log_history if "sfpo/drift_norm" in h]
    return {"diff": max_diff(grpo, full_state(sfpo)), "drift": drift}


def scenario_alpha_zero():
    grpo = full_state(run(GRPOTrainer, GRPOConfig, "grpo1"))
    sfpo = full_state(run(SFPOTrainer, SFPOConfig, "sfpo_a0", alpha=0.0, lr_stepping="optimizer_step"))
    return {"diff": max_diff(grpo, sfpo)}


def scenario_reposition():
    RecordingSFPO.records = []
    sfpo = run(RecordingSFPO, SFPOConfig, "sfpo_a08", inner_steps=K, alpha=ALPHA, lr_stepping="optimizer_step",
               switch="never")
    manual = run(ManualGRPO, GRPOConfig, "manual", num_iterations=K + 1, callbacks=[ManualReposition(2, K + 1)])
    plain = run(GRPOTrainer, GRPOConfig, "plain3", num_iterations=K + 1)  # no reposition at all
    ours, theirs, none = full_state(sfpo), full_state(manual), full_state(plain)
    formula = []  # θ̃ against θ0 + α(θK − θ0) in float64, relative to max(|θ0|, |θK|) (fp32 rounding)
    for r in RecordingSFPO.records:
        for a, b, t in zip(r["theta0"], r["theta_k"], r["tilde"]):
            a, b, t = a.double(), b.double(), t.double()
            scale = torch.maximum(a.abs(), b.abs()).clamp_min(1e-30)  # ZeRO's padding is 0 in all three
            formula.append(((t - (a + ALPHA * (b - a))).abs() / scale).max().item())
    return {"optimizer": type(sfpo._zero.optimizer).__name__, "zero": type(sfpo.optimizer.optimizer).__name__,
            "diff_manual": max_diff(ours, theirs), "diff_no_reposition": max_diff(ours, none),
            "repositions": len(RecordingSFPO.records), "formula_rel_err": max(formula),
            "moved": max((b - a).abs().max().item() for r in RecordingSFPO.records
                         for a, b in zip(r["theta0"], r["theta_k"])),
            "module_vs_master": [r.get("module_vs_master") for r in RecordingSFPO.records],
            "anchor_numel": sum(a.numel() for a in sfpo.sfpo.anchor.tensors),
            "param_numel": sum(p.ds_numel if STAGE == 3 else p.numel() for _, p in named_params(sfpo)),
            "anchor_devices": sorted({str(a.device) for a in sfpo.sfpo.anchor.tensors})}


def scenario_resume():
    # 2 SFPO steps (optimizer steps 1-6, 7-12); resume inside fast pass 2 (after 3) and inside the slow pass (11)
    kw = dict(inner_steps=K, alpha=ALPHA, max_steps=12, lr_scheduler_type="linear")
    full = full_state(run(SFPOTrainer, SFPOConfig, "full", save_strategy="steps", save_steps=1, **kw))
    diffs = {}
    for at in (3, 11):
        resumed = run(SFPOTrainer, SFPOConfig, f"resumed{at}", resume=os.path.join(OUT, "full", f"checkpoint-{at}"),
                      **kw)
        diffs[at] = max_diff(full, full_state(resumed))
    files = sorted(os.listdir(os.path.join(OUT, "full", "checkpoint-3")))
    return {"diffs": diffs, "files": files}


def scenario_kill():
    """SIGKILL at each stage of writing checkpoint-5 (inside the slow pass of the first SFPO step) in a process of
    its own, then resume_from_checkpoint=True here: the newest complete checkpoint (4) is used, and the run ends
    bit-identical to an uninterrupted one (masters and module weights)."""
    from kill_worker import RUN as KILL_RUN

    kw = {k: v for k, v in KILL_RUN.items() if k not in ("save_strategy", "save_steps")}
    full = full_state(run(SFPOTrainer, SFPOConfig, "kill_full", **kw))
    out = {}
    for stage in ("folder", "weights", "ds_engine", "sfpo_state", "trainer_state"):
        folder = os.path.join(OUT, f"kill_{stage}")
        env = {**os.environ, "MASTER_PORT": str(_free_port()),  # this process's own rendezvous holds ours
               "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "kill_worker.py"), folder, "5",
                               stage, json.dumps(DS)], env=env, capture_output=True, text=True, timeout=600)
        partial = sorted(os.listdir(os.path.join(folder, "checkpoint-5"))) if os.path.isdir(
            os.path.join(folder, "checkpoint-5")) else None
        resumed = run(SFPOTrainer, SFPOConfig, f"kill_{stage}", resume=True, **kw)
        out[stage] = {"returncode": proc.returncode, "stderr": proc.stderr[-1500:] if proc.returncode != -9 else "",
                      "partial": partial, "diff": max_diff(full, full_state(resumed)),
                      "global_step": resumed.state.global_step}
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scenario_replicas():
    sfpo = run(SFPOTrainer, SFPOConfig, "replicas", inner_steps=K, alpha=ALPHA, max_steps=8)  # ends in a fast pass
    state = full_state(sfpo)
    flat = torch.cat([v.reshape(-1) for v in state.values()])
    everyone = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, flat)
    local = torch.tensor([float(sum(a.numel() for a in sfpo.sfpo.anchor.tensors))])
    numels = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(numels, local)
    return {"world_size": dist.get_world_size(), "replica_diff": max((e - everyone[0]).abs().max().item()
                                                                    for e in everyone),
            "anchor_numel_per_rank": [int(n.item()) for n in numels],
            "param_numel": sum(p.ds_numel if STAGE == 3 else p.numel() for _, p in named_params(sfpo)),
            "phase": sfpo.sfpo.phase,
            "drift": [h["sfpo/drift_norm"] for h in sfpo.state.log_history if "sfpo/drift_norm" in h]}


def scenario_refusal():
    """What SFPOTrainer refuses at construction, each with its reason."""
    messages = {}
    for name, ds, extra in (("stage0", {**DS, "zero_optimization": {"stage": 0}}, {}),
                            ("reset", DS, {"optimizer_state": "reset"})):
        try:
            run(SFPOTrainer, SFPOConfig, "refused_" + name, deepspeed=ds, max_steps=0, **extra)
            messages[name] = None
        except NotImplementedError as e:
            messages[name] = str(e)
    return messages


def main():
    result = {name: globals()["scenario_" + name]() for name in sys.argv[4].split(",")}
    if dist.get_rank() == 0:
        with open(RESULT, "w") as f:
            json.dump(result, f)
    end_distributed_run()


if __name__ == "__main__":
    main()
