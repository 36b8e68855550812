"""Build step that pyproject.toml cannot express: copy what commands read at run time (the shipped configs, the
grid's results, the demo's record) from where the checkout keeps them into the wheel, as ``sfpo/assets/``.
``sfpo.shipped`` finds the copies in an installed package and the originals in a checkout."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# checkout path -> path under the package; a missing file is skipped (the demo record is made on demand)
SHIP = {"configs": "assets/configs",
        "docs/reproduction/results.json": "assets/reproduction/results.json",
        "docs/reproduction/demo_record.json": "assets/reproduction/demo_record.json"}


class BuildPyWithAssets(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the checkout itself
            return
        for src, dst in SHIP.items():
            src, dst = ROOT / src, Path(self.build_lib) / "sfpo" / dst
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.pyc", "__pycache__"))
            elif src.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)


setup(cmdclass={"build_py": BuildPyWithAssets})
