"""Test-only, imported by verl itself (``VERL_USE_EXTERNAL_MODULES=verl_cpu_platform``, set by ``verl_cpu.CPU_ENV``) in
every process, Ray workers included, before verl loads its plugins: registers a CPU platform (device "cpu", gloo)
for ``VERL_PLATFORM`` to select, and gives Ray workers a plain gloo process group. Nothing here is library code.
"""

import torch


class _CPUDevice:
    """What verl calls on ``get_torch_device()``, answered for a CPU: no device memory to report, nothing to sync."""

    def __getattr__(self, name):
        if name.endswith(("memory_allocated", "memory_reserved")):
            return lambda *a, **k: 0
        return getattr(torch.cuda, name)

    @staticmethod
    def mem_get_info(*_):
        import psutil

        vm = psutil.virtual_memory()
        return vm.available, vm.total

    def current_device(self):
        return 0

    def get_device_name(self, *_):
        return "CPU"  # verl's MFU table has no CPU entry: MFU reads 0

    def device_count(self):
        return 1

    def is_available(self):
        return True

    def synchronize(self, *_):
        pass

    def empty_cache(self):
        pass

    def set_device(self, *_):
        pass

    def manual_seed(self, seed):
        torch.manual_seed(seed)

    manual_seed_all = manual_seed


def _register_platform() -> None:
    from verl.plugin.platform.platform_cuda import PlatformCUDA
    from verl.plugin.platform.platform_manager import PlatformRegistry

    @PlatformRegistry.register(platform="sfpo_test_cpu")
    class CPUTestPlatform(PlatformCUDA):
        """CUDA's platform with the device and collectives of a CPU (torch.cuda's memory queries return 0 there)."""

        @property
        def device_name(self) -> str:
            return "cpu"

        @property
        def device_module(self):
            return _CPUDevice()

        def is_available(self) -> bool:
            return True

        def current_device(self) -> str:
            return "cpu"  # verl passes it to .to() and torch.device(); an index would name an accelerator

        def device_count(self) -> int:
            return 1

        def set_device(self, device_index: int) -> None:
            pass

        def synchronize(self, device_index=None) -> None:
            pass

        def manual_seed(self, seed: int) -> None:
            torch.manual_seed(seed)

        def manual_seed_all(self, seed: int) -> None:
            torch.manual_seed(seed)

        def set_allocator_settings(self, settings: str) -> None:
            pass

        def empty_cache(self) -> None:
            pass

        def communication_backend_name(self) -> str:
            return "gloo"


_register_platform()  # registering a name selects nothing: VERL_PLATFORM does


def _gloo_only() -> None:
    """verl's Ray workers init torch.distributed with "cpu:gloo,<device>:<backend>", which reads "cpu:gloo,cpu:gloo"
    here and is refused: default the backend to plain gloo (the function object itself, so every import sees it)."""
    from verl.utils import distributed

    distributed.initialize_global_process_group_ray.__defaults__ = (None, "gloo")


_gloo_only()
