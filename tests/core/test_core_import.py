"""``import sfpo.core`` needs torch alone: checked in a fresh interpreter where the training stack cannot be
imported at all (a meta-path blocker), and by listing what the import pulled into sys.modules."""

from __future__ import annotations

import json
import subprocess
import sys

# The optional stack (pyproject extras) and what it would drag in; none of it may be needed by sfpo.core.
BLOCKED = ["transformers", "trl", "vllm", "verl", "accelerate", "peft", "datasets", "math_verify", "yaml",
           "tqdm", "matplotlib", "tensorboard", "wandb", "safetensors", "tokenizers", "huggingface_hub"]

SCRIPT = r"""
import importlib.abc, json, sys
import torch  # first: torch's own optional imports (torch.hub tries tqdm) are torch's business, not ours
before = set(sys.modules)
blocked = set(json.loads(sys.argv[1]))
attempts = []

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            attempts.append(name)
            raise ImportError(f"{name} is blocked: sfpo.core must import with torch alone")
        return None

sys.meta_path.insert(0, Blocker())
import sfpo.core
from sfpo.core import SlowFastUpdate, policy_loss, compute_advantages, make_switch  # noqa: F401
loaded = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in blocked)
print(json.dumps({"attempts": attempts, "loaded": loaded,
                  "sfpo": sorted(m for m in sys.modules if m.startswith("sfpo"))}))
"""


def test_import_sfpo_core_with_torch_alone():
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(BLOCKED)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["attempts"] == [], f"sfpo.core tried to import {report['attempts']}"
    assert report["loaded"] == []
    # only the package and its core: the trainer, tasks and integrations stay unimported
    assert set(report["sfpo"]) == {"sfpo", "sfpo.core", "sfpo.core.advantages", "sfpo.core.anchor", "sfpo.core.losses",
                                   "sfpo.core.params", "sfpo.core.slow_fast", "sfpo.core.switch"}


def test_the_blocker_blocks():
    """The check above can fail: a module that imports transformers is refused by the same blocker."""
    script = SCRIPT.replace("import sfpo.core\n", "import sfpo.core\nimport transformers\n")
    out = subprocess.run([sys.executable, "-c", script, json.dumps(BLOCKED)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "transformers is blocked" in out.stderr
