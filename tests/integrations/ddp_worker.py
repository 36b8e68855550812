"""Run by ``accelerate launch --num_processes 2 --cpu`` from test_trl_ddp.py: SFPO steps under DDP (gloo), then
every rank's trainable weights and anchor are gathered and compared. Rank 0 writes the verdict as JSON."""

import json
import sys

import torch
import torch.distributed as dist

from sfpo.integrations.trl import SFPOConfig, SFPOTrainer
from tiny_trl import SMALL, end_distributed_run, make_dataset, make_model, make_tokenizer, ones_reward


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).float() for t in tensors])


def main(output_dir: str, result_path: str) -> None:
    tok = make_tokenizer()
    # 2 SFPO steps (3 passes × 1 optimizer step), then one fast pass of the third: the anchor is live at the end
    args = SFPOConfig(output_dir=output_dir, **{**SMALL, "steps_per_generation": 2}, inner_steps=2, max_steps=7)
    trainer = SFPOTrainer(model=make_model(tok), reward_funcs=ones_reward, args=args, train_dataset=make_dataset(),
                          processing_class=tok)
    start = flat(trainer.model.parameters()).clone()
    prompts = []
    generate = trainer._generate_and_score_completions

    def recording(inputs):
        prompts.append(sorted(row["prompt"] for row in inputs))
        return generate(inputs)

    trainer._generate_and_score_completions = recording
    trainer.train()

    mine = torch.stack([flat(trainer.sfpo.params), flat(trainer.sfpo.anchor.tensors)])
    everyone = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine)
    all_prompts = [None] * dist.get_world_size()
    dist.all_gather_object(all_prompts, prompts)
    if dist.get_rank() == 0:
        result = {
            "world_size": dist.get_world_size(),
            "weights_max_diff": max((w[0] - everyone[0][0]).abs().max().item() for w in everyone),
            "anchor_max_diff": max((w[1] - everyone[0][1]).abs().max().item() for w in everyone),
            "moved": (everyone[0][0] - start).abs().max().item(),
            "phase": trainer.sfpo.phase,
            "drift_norms": [h["sfpo/drift_norm"] for h in trainer.state.log_history if "sfpo/drift_norm" in h],
            "ranks_saw_different_prompts": all_prompts[0] != all_prompts[1],
            "generations_per_rank": [len(p) for p in all_prompts],
        }
        with open(result_path, "w") as f:
            json.dump(result, f)
    end_distributed_run()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
