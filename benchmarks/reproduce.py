"""`sfpo reproduce` under its old name: the reproduction harness lives in the package (sfpo.reproduce); this
script is kept so that the commands in benchmarks/reproduce.sh and older notes still run."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # a checkout without the package installed

from sfpo.reproduce.harness import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(prog="python benchmarks/reproduce.py"))
