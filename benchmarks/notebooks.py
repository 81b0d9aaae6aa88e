"""Budgets of the course notebooks: cold-cache wall time and peak memory of each notebook's kernel.

Each notebook is executed on a copy, in a fresh process, with an empty model cache, so every model
is trained as a learner's first run would. Budget: ≤ 60 s and ≤ 1.5 GB on 2 CPU cores.

    python benchmarks/notebooks.py [NAME ...]
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RUNNER = r"""
import json, resource, sys, time
from metaadv_edu.notebooks import execute_notebook
seconds = execute_notebook(sys.argv[1])
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": seconds, "kernel_peak_mib": peak_kib / 1024}))
"""


def measure(path: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / path.name
        shutil.copy(path, copy)
        env = {**os.environ, "METAADV_CACHE": str(Path(tmp) / "cache")}
        out = subprocess.run(
            [sys.executable, "-c", RUNNER, str(copy)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            cwd=path.parent,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])


def rows(names: list[str] | None = None) -> list[tuple[str, dict]]:
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if names:
        paths = [p for p in paths if any(p.name.startswith(n) for n in names)]
    return [(p.stem, measure(p)) for p in paths]


def main(names: list[str]) -> None:
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if names:
        paths = [p for p in paths if any(p.name.startswith(n) for n in names)]
    print(f"{'notebook':<34} {'cold wall time':>15} {'kernel peak RSS':>16}")
    for path in paths:
        result = measure(path)
        print(f"{path.name:<34} {result['seconds']:>13.1f} s {result['kernel_peak_mib']:>12.0f} MiB", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
