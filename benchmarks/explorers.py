"""Slider → redrawn figure latency of every notebook's explorer, and its memory over 300 moves.

Each notebook runs in a fresh kernel up to the cell that builds its ``explorer`` (models come from
the cache; a cold cache trains them first); then every slider is moved through values across its
range and the median and worst time of :meth:`Explorer.update` are recorded. Finally the sliders are
moved 300 more times in turn and the kernel's resident memory is compared before and after.
Budget: median ≤ 100 ms for every explorer, no growth over 300 moves.

    python benchmarks/explorers.py [NAME ...]
"""

import json
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import json as _json, statistics as _st, gc as _gc
import psutil as _psutil

def _values(s, n=5):
    if hasattr(s, "options"):
        return [("index", i) for i in range(len(s.options))]
    if s.__class__.__name__ == "FloatLogSlider":
        lo, hi = s.min, s.max
        return [("value", s.base ** (lo + (hi - lo) * i / (n - 1))) for i in range(n)]
    lo, hi, step = s.min, s.max, s.step or 1
    return [("value", type(s.value)(round((lo + (hi - lo) * i / (n - 1)) / step) * step)) for i in range(n)]

def _move(s, how):
    kind, v = how
    setattr(s, kind, v)

_times, _per = [], {}
_start = {n: (s.index if hasattr(s, "options") else s.value) for n, s in explorer.sliders.items()}
for _name, _s in explorer.sliders.items():
    _mine = []
    for _how in _values(_s)[1:] + _values(_s)[:1]:
        explorer.last_update_s = float("nan")
        _move(_s, _how)
        if explorer.last_update_s == explorer.last_update_s:  # a move to the current value redraws nothing
            _mine.append(explorer.last_update_s)
    _per[_name] = _st.median(_mine)
    _times += _mine
    _move(_s, ("index" if hasattr(_s, "options") else "value", _start[_name]))
_proc = _psutil.Process()
_plan = [(s, how) for s in explorer.sliders.values() for how in _values(s)]
for _i in range(30):
    _move(*_plan[_i % len(_plan)])
_gc.collect()
_before = _proc.memory_info().rss
for _i in range(300):
    _move(*_plan[_i % len(_plan)])
_gc.collect()
_after = _proc.memory_info().rss
print(_json.dumps({"sliders": len(explorer.sliders), "median_ms": _st.median(_times) * 1e3,
                   "max_ms": max(_times) * 1e3, "per_slider_ms": {k: v * 1e3 for k, v in _per.items()},
                   "growth_mib": (_after - _before) / 2**20}))
"""


def measure(path: Path, timeout: int = 600) -> dict:
    nb = nbformat.read(str(path), as_version=4)
    last = max(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "explorer =" in c.source)
    nb.cells = nb.cells[: last + 1] + [nbformat.v4.new_code_cell(PROBE)]
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
    return json.loads(text.strip().splitlines()[-1])


def rows(names: list[str] | None = None) -> list[tuple[str, str, dict]]:
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if names:
        paths = [p for p in paths if any(p.name.startswith(n) for n in names)]
    return [
        (
            p.stem,
            f"{r['median_ms']:.0f} ms (worst {r['max_ms']:.0f} ms, {r['sliders']} sliders), "
            f"memory after 300 moves {r['growth_mib']:+.1f} MiB",
            r,
        )
        for p in paths
        for r in [measure(p)]
    ]


def main(names: list[str]) -> None:
    for name, text, result in rows(names):
        slow = {k: round(v) for k, v in result["per_slider_ms"].items()}
        print(f"{name:<34} {text}  per slider: {slow}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
