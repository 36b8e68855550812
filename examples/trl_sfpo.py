"""SFPO in a TRL pipeline: TRL's GRPO recipe (trl/scripts/grpo.py) with GRPOConfig/GRPOTrainer swapped for
SFPOConfig/SFPOTrainer (the lines marked ``# SFPO``). Everything else is TRL's: data, rewards, vLLM, PEFT,
accelerate configs, logging. Every SFPOConfig field is a flag (--inner_steps, --alpha, --switch, ...).

Real run, e.g. on GPUs (model and data from the hub; add --use_vllm, --use_peft, an accelerate config as usual):

    accelerate launch examples/trl_sfpo.py --model_name_or_path Qwen/Qwen2.5-Math-1.5B \
        --dataset_name open-r1/DAPO-Math-17k-Processed --dataset_config en --output_dir runs/trl_sfpo \
        --inner_steps 3 --alpha 0.8 --learning_rate 1e-6 --num_generations 8 --max_completion_length 2048 \
        --per_device_train_batch_size 16 --gradient_accumulation_steps 4 --steps_per_generation 16 --bf16 true

Offline smoke run on a CPU: the project's testbed policy (1.05M parameters, warm-started once on procedural
arithmetic and cached) with CPU-friendly defaults:

    python examples/trl_sfpo.py --tiny --output_dir runs/trl_sfpo_tiny --max_steps 16
"""

import logging
import sys
from dataclasses import dataclass, field
from typing import Optional

from datasets import Dataset, load_dataset
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from sfpo.integrations.trl import SFPOConfig, SFPOTrainer  # SFPO: was `from trl import GRPOConfig, GRPOTrainer`
from sfpo.rewards import sfpo_math_reward

# The paper's runs (and the official scripts) hold the LR constant; TRL's default decays it linearly to 0.
PAPER_DEFAULTS = dict(lr_scheduler_type="constant")
# What --tiny sets unless given on the command line: fp32 without checkpointing (bf16 has no fast path on most
# CPUs), 16 prompts × 8 completions per generation batch, each pass 2 optimizer steps of 64 completions.
TINY_DEFAULTS = dict(use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none", num_generations=8,
                     per_device_train_batch_size=64, gradient_accumulation_steps=1, steps_per_generation=2,
                     max_completion_length=16, learning_rate=1e-4, logging_steps=8, save_strategy="no",
                     max_steps=16)


@dataclass
class ExampleArguments(ScriptArguments):
    tiny: bool = field(default=False, metadata={"help": "Offline CPU run: the testbed policy on arithmetic."})
    tiny_warmup_steps: Optional[int] = field(default=None, metadata={
        "help": "Most supervised warm-start steps of the testbed policy (cached; default: the testbed's, shared with "
                "`sfpo demo`; 0 = random init)."})
    tiny_prompts: int = field(default=1024, metadata={"help": "Arithmetic training prompts for --tiny."})


def arithmetic_setup(args: ExampleArguments):
    """(model path, dataset, reward) for --tiny: "12+34+56=" → "46+56=102", reward 1 for the right final sum."""
    from sfpo.tasks.arithmetic import ArithmeticTask
    from sfpo.tasks.base import Example
    from sfpo.testbed import warm_start

    task = ArithmeticTask()
    rows = [{"prompt": ex.prompt, "answer": ex.answer} for ex in task.examples("train", args.tiny_prompts)]

    def arithmetic_reward(completions, answer, **kwargs):
        return [task.reward(text, Example("", gold)) for text, gold in zip(completions, answer)]

    model = warm_start("arithmetic", steps=args.tiny_warmup_steps, progress=False)
    return str(model), Dataset.from_list(rows), [arithmetic_reward]


def main(script_args: ExampleArguments, training_args: SFPOConfig, model_args: ModelConfig) -> None:
    if script_args.tiny:
        model, dataset, reward_funcs = arithmetic_setup(script_args)
    else:
        model = model_args.model_name_or_path
        training_args.model_init_kwargs = {"dtype": model_args.dtype, **(training_args.model_init_kwargs or {})}
        dataset = load_dataset(script_args.dataset_name, name=script_args.dataset_config,
                               split=script_args.dataset_train_split)
        reward_funcs = [sfpo_math_reward]  # the paper's: 1 for a correct last \boxed{}, 0.1 boxed but wrong, else 0
    trainer = SFPOTrainer(  # SFPO: was GRPOTrainer
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        peft_config=get_peft_config(model_args),
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)


def make_parser(argv: list[str]) -> TrlParser:
    parser = TrlParser((ExampleArguments, SFPOConfig, ModelConfig))  # SFPO: was GRPOConfig
    parser.set_defaults(**PAPER_DEFAULTS)
    if "--tiny" in argv:
        parser.set_defaults(**TINY_DEFAULTS)
    return parser


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(*make_parser(sys.argv).parse_args_and_config())
