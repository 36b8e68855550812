"""sfpo: Slow-Fast Policy Optimization for RL of language models on reasoning tasks.

``sfpo.core`` needs torch alone; the trainer, tasks and integrations import their libraries lazily.
"""

__version__ = "0.1.0"
