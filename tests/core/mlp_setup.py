"""The base update the SlowFastUpdate tests run on (a 2-layer MLP classifier and a real optimizer) and the
comparisons they use: bit-for-bit equality of tensors and optimizer states, live storages, the reference lerp."""

from __future__ import annotations

import copy
import gc

import torch
from torch import nn



class MLPSetup:
    """A 2-layer MLP classifier, a fixed batch and an optimizer; ``one_pass()`` is one pass of the base
    update: ``mini_batches`` optimizer steps over the batch. Equal arguments give equal bits."""

    def __init__(self, optimizer: str = "adamw", seed: int = 0, mini_batches: int = 3, frozen: bool = False,
                 hidden: int = 16, width: int = 6) -> None:
        g = torch.Generator().manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, 3))
        with torch.no_grad():
            for p in self.model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        if frozen:
            self.model[0].weight.requires_grad_(False)
        # A frozen tensor the pass itself changes (as a running statistic would): if the update anchored or
        # repositioned it, the reposition would pull it back towards θ0 and the tests would see it.
        self.frozen = nn.Parameter(torch.zeros(5, 7), requires_grad=False)
        self.model.register_parameter("stat", self.frozen)
        self.x = torch.randn(24, width, generator=g)
        self.y = torch.randint(0, 3, (24,), generator=g)
        self.mini_batches = mini_batches
        self.kind = optimizer
        self.optimizer = self.new_optimizer()
        self.passes = 0

    def new_optimizer(self) -> torch.optim.Optimizer:
        if self.kind == "adamw":
            return torch.optim.AdamW(self.trainable, lr=0.05, weight_decay=0.01)
        if self.kind == "sgd":  # with momentum, so that SGD has optimizer state as well
            return torch.optim.SGD(self.trainable, lr=0.1, momentum=0.9)
        raise ValueError(self.kind)

    @property
    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def one_pass(self) -> torch.Tensor:
        total = torch.zeros(())
        for idx in torch.arange(len(self.x)).chunk(self.mini_batches):
            self.optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(self.model(self.x[idx]), self.y[idx])
            loss.backward()
            self.optimizer.step()
            total += loss.detach()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.frozen.add_(1.0)
        self.passes += 1
        return total / self.mini_batches

    def weights(self) -> list[torch.Tensor]:
        """Copies of the model's weights, trainable or not, without the statistic the passes count up."""
        return [p.detach().clone() for p in self.model.parameters() if p is not self.frozen]

    def opt_state(self) -> dict:
        return copy.deepcopy(self.optimizer.state_dict()["state"])

    def trainable_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.trainable)


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert torch.equal(x, y), f"tensor {i} differs: max |Δ| = {(x - y).abs().max():.3e}"


def assert_same_state(a: dict, b: dict) -> None:
    """Bit-exact comparison of two ``optimizer.state_dict()["state"]``: moments and step counts."""
    assert sorted(a) == sorted(b), f"parameters with optimizer state differ: {sorted(a)} vs {sorted(b)}"
    for i in a:
        assert sorted(a[i]) == sorted(b[i]), f"state keys of parameter {i} differ"
        for k in a[i]:
            x, y = a[i][k], b[i][k]
            assert torch.equal(x, y) if torch.is_tensor(x) else x == y, f"optimizer state {i}/{k} differs"


def live_storages() -> dict[int, tuple[int, torch.Tensor]]:
    """Every tensor storage the garbage collector can reach: data pointer → (bytes, a tensor on it).

    An accounting of memory independent of ``SlowFastUpdate.extra_bytes()``. The returned tensors keep those
    storages alive, so none of them can be freed and its address reused while a measurement is running."""
    gc.collect()
    storages = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor):  # type(), not isinstance: no __class__ lookups on lazy modules
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = (storage.nbytes(), obj)
    return storages


def new_bytes(before: dict[int, tuple[int, torch.Tensor]], optimizer: torch.optim.Optimizer | None = None) -> int:
    """Bytes of the storages alive now that were not alive at ``before``, less those the optimizer's state
    holds (a "reset" replaces the state by a fresh one of the same size: the optimizer's, not the update's)."""
    now = live_storages()
    owned = set()
    if optimizer is not None:
        owned = {v.untyped_storage().data_ptr() for st in optimizer.state.values() for v in st.values()
                 if torch.is_tensor(v)}
    return sum(nbytes for ptr, (nbytes, _) in now.items() if ptr not in before and ptr not in owned)


def lerp_reference(setup: MLPSetup, anchor: list[torch.Tensor], alpha: float) -> None:
    """Stage II by hand on the trainable parameters: θ̃ = θ0 + α(θK − θ0), as θ.lerp(θ0, 1 − α)."""
    with torch.no_grad():
        for p, a in zip(setup.trainable, anchor):
            p.copy_(torch.lerp(p, a, 1.0 - alpha))
