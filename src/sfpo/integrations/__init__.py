"""Adapters that run ``sfpo.core`` inside other training frameworks (TRL today).

Each adapter lives in its own module and imports its framework there, so ``import sfpo.integrations`` is free;
use ``from sfpo.integrations.trl import SFPOConfig, SFPOTrainer`` (extra ``sfpo[trl]``).
"""
