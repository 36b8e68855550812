"""Trust-region SFPO in the trainer on a tiny Qwen2: an infinite budget is plain SFPO bit for bit, and with a
small one the KL to θ0 that the test measures on the batch at the start of every slow pass is within budget."""

import math

import pytest
import torch

from test_trainer import _strip_times, run
from sfpo.config import ConfigError, load_config

SFPO = ["algorithm.name=sfpo", "algorithm.inner_steps=2", "algorithm.alpha=0.8"]
TR_KEYS = ("sfpo/kl_fast", "sfpo/kl_reposition", "sfpo/alpha_backtracks")


def test_infinite_budget_is_plain_sfpo(tmp_path):
    plain, _, a = run(tmp_path, SFPO, name="plain")
    tr, _, b = run(tmp_path, SFPO + ["algorithm.alpha_rule=kl_budget", "algorithm.kl_budget=.inf"], name="tr")
    for (n, p), q in zip(plain.model.named_parameters(), tr.model.parameters()):
        assert torch.equal(p, q), n
    steps = [r for r in b if "sfpo/kl_fast" in r]
    assert len(steps) == 3 and all(r["sfpo/kl_fast"] > 0 and r["sfpo/alpha"] == 0.8 for r in steps)
    assert _strip_times(a) == [{k: v for k, v in r.items() if k not in TR_KEYS} for r in _strip_times(b)]


def test_small_budget_holds_on_the_batch(tmp_path, monkeypatch):
    from sfpo import trainer as trainer_mod

    budget, seen = 1e-3, []
    real = trainer_mod.Trainer._one_pass

    def watched(self, batch, log, **kwargs):
        if self.update.phase == "slow":  # the weights are θ̃ here: measure it ourselves
            seen.append(self._batch_kl(batch))
        return real(self, batch, log, **kwargs)

    monkeypatch.setattr(trainer_mod.Trainer, "_one_pass", watched)
    _, _, recs = run(tmp_path, SFPO + ["algorithm.alpha_rule=kl_budget", f"algorithm.kl_budget={budget}"])
    steps = [r for r in recs if "sfpo/kl_fast" in r]
    assert len(seen) == len(steps) == 3
    for kl, r in zip(seen, steps):
        assert kl <= budget and kl == r["sfpo/kl_reposition"]
        assert 0.0 <= r["sfpo/alpha"] <= 0.8
    # lr 1e-2 on the tiny model moves θK far (KL ≫ 1e-3), so the budget must have shrunk α on every step
    assert all(r["sfpo/kl_fast"] > budget and r["sfpo/alpha"] < 0.8 for r in steps)


def test_batch_kl_is_zero_at_theta0_and_positive_after_a_pass(tmp_path):
    tr, _, _ = run(tmp_path, SFPO, steps=1)
    batch_holder = {}
    real = tr._one_pass

    def grab(batch, log, **kwargs):
        batch_holder.setdefault("kl0", tr._batch_kl(batch))
        out = real(batch, log, **kwargs)
        batch_holder.setdefault("kl1", tr._batch_kl(batch))
        return out

    tr._one_pass = grab
    tr._old_from_first_pass = lambda: False  # old log-probs by their own forward, before the first pass
    tr.train_step()
    # recomputed old log-probs are the same forward in eval mode: KL at θ0 is exactly 0
    assert batch_holder["kl0"] == 0.0 and batch_holder["kl1"] > 0.0


def test_config_rules():
    with pytest.raises(ConfigError, match="kl_budget must be > 0"):
        load_config(None, ["algorithm.kl_budget=0"])
    with pytest.raises(ConfigError, match="set algorithm.name=sfpo"):
        load_config(None, ["algorithm.name=grpo", "algorithm.alpha_rule=kl_budget"])
    assert math.isinf(load_config(None, ["algorithm.kl_budget=.inf"]).algorithm.kl_budget)
