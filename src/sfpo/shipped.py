"""What the commands read at run time besides code: the shipped configs (by name), the grid's results and the
record the demo compares with.

In a checkout they are read where they are kept (``configs/``, ``docs/reproduction/``); a wheel carries copies
under ``sfpo/assets/`` (``setup.py`` copies them at build time), so an installed package needs no checkout. This
module only finds files; it does not parse them.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

__all__ = ["CONFIGS_DIR", "RESULTS", "DEMO_RECORD", "config_names", "resolve_config", "version"]

_ASSETS = Path(__file__).resolve().parent / "assets"
_CHECKOUT = Path(__file__).resolve().parents[2]


def _find(in_package: str, in_checkout: str) -> Path:
    """The wheel's copy when there is one (an installed package), else the checkout's file."""
    shipped = _ASSETS / in_package
    return shipped if shipped.exists() else _CHECKOUT / in_checkout


CONFIGS_DIR = _find("configs", "configs")
RESULTS = _find("reproduction/results.json", "docs/reproduction/results.json")
# made by benchmarks/demo_record.py with exactly the demo's settings, several seeds
DEMO_RECORD = _find("reproduction/demo_record.json", "docs/reproduction/demo_record.json")


def config_names() -> dict[str, Path]:
    """Shipped configs by name: ``sfpo_arithmetic``, ``paper/sfpo_qwen2.5-math-1.5b``, …"""
    if not CONFIGS_DIR.is_dir():
        return {}
    return {str(p.relative_to(CONFIGS_DIR).with_suffix("")): p for p in sorted(CONFIGS_DIR.rglob("*.yaml"))}


def resolve_config(name_or_path: str | Path) -> Path:
    """A config file: a path as given when it exists, else a shipped config's name (``.yaml`` optional).
    FileNotFoundError (with the names) when it is neither."""
    path = Path(name_or_path)
    if path.exists():
        return path
    names = config_names()
    key = str(name_or_path).removesuffix(".yaml").removeprefix("configs/")
    if key in names:
        return names[key]
    raise FileNotFoundError(f"config file {name_or_path} does not exist, and it is not a shipped config's name "
                            f"either (the names: sfpo train --list-configs)")


def version() -> str:
    """The installed distribution's version; a checkout on PYTHONPATH that was never installed has none."""
    try:
        return metadata.version("sfpo")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"
