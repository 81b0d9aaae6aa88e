"""Run the course's benchmarks and write their numbers into the README's performance table.

The table between ``<!-- benchmarks:start -->`` and ``<!-- benchmarks:end -->`` in README.md is
replaced by what this run measured, with the machine, the device and the date, so the README never
quotes a number no command produced. Measure alone on a quiet machine.

    python benchmarks/readme.py                 # CPU (or whatever pick_device() picks)
    METAADV_DEVICE=cuda python benchmarks/readme.py --section gpu
    python benchmarks/readme.py --suite         # also time the whole `pytest` run
    python benchmarks/readme.py --dry-run       # print the table, leave README.md alone
    python benchmarks/readme.py --skip-explorers   # without the explorers' slider latency (minutes faster)
"""

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import covers as covers_bench
import explorers as explorers_bench
import maml_speed

import notebooks as notebooks_bench
from metaadv_edu import pick_device

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    where = f"{os.cpu_count()} CPU cores ({cpu})"
    if device.type == "cuda":
        where += f", GPU: {torch.cuda.get_device_name(device)}"
    return f"{where}; torch {torch.__version__}; device `{device}`; {datetime.date.today().isoformat()}"


def table(device: torch.device, suite: bool, explorers: bool = True) -> str:
    lines = ["| what | measured | budget |", "|---|---|---|"]
    nb_rows = notebooks_bench.rows()
    for name, r in nb_rows:
        flag = "" if r["seconds"] <= 60 and r["kernel_peak_mib"] <= 1536 else " ✗"
        measured = f"{r['seconds']:.0f} s, kernel peak {r['kernel_peak_mib']:.0f} MiB{flag}"
        lines.append(f"| notebook {name}, empty model cache (shipped weights) | {measured} | ≤ 60 s, ≤ 1.5 GB |")
    if not explorers:
        lines.append(
            "| explorers: slider → redrawn figure | not measured by this run: "
            "`python benchmarks/explorers.py` | ≤ 100 ms, no growth |"
        )
    for name, text, r in explorers_bench.rows() if explorers else []:
        flag = "" if r["median_ms"] <= 100 and r["growth_mib"] <= 5 else " ✗"
        lines.append(f"| explorer of {name}: slider → redrawn figure, median | {text}{flag} | ≤ 100 ms, no growth |")
    for what, measured in maml_speed.rows(device):
        if what.startswith("MAML meta-step"):
            speedup = float(re.search(r"\*\*([\d.]+)×\*\*", measured).group(1))  # batched vs the loop
            lines.append(f"| {what} | {measured}{'' if speedup >= 10 else ' ✗'} | ≥ 10× the loop |")
        else:
            lines.append(f"| {what} | {measured} | linear in steps |")
    if device.type == "cpu":
        for what, measured in covers_bench.rows():
            lines.append(f"| {what} | {measured} | ≥ 10,000 covers/s |")
    if suite:
        start = time.perf_counter()
        passed = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=ROOT, check=False).returncode == 0
        minutes = (time.perf_counter() - start) / 60
        flag = "" if passed and minutes <= 10 else " ✗" + ("" if passed else " (tests failed)")
        lines.append(
            f"| `pytest` on 2 workers (units, nbval of every notebook, browser tests) | "
            f"{minutes:.1f} min{flag} | ≤ 10 min |"
        )
    return "\n".join(lines)


def write(section: str, text: str) -> None:
    start, end = f"<!-- benchmarks:{section}:start -->", f"<!-- benchmarks:{section}:end -->"
    readme = README.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(readme):
        raise SystemExit(f"README.md has no {start} … {end} block")
    README.write_text(pattern.sub(lambda _: f"{start}\n{text}\n{end}", readme), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", default="cpu", choices=("cpu", "gpu"), help="which README table to rewrite")
    parser.add_argument("--suite", action="store_true", help="also time the whole test suite")
    parser.add_argument("--dry-run", action="store_true", help="print the table without writing README.md")
    parser.add_argument(
        "--skip-explorers",
        action="store_true",
        help="leave out the explorers' latency (their 300-move runs take most of the time)",
    )
    args = parser.parse_args()
    device = pick_device()
    command = (
        "python benchmarks/readme.py"
        + (" --skip-explorers" if args.skip_explorers else "")
        + (" --suite" if args.suite else "")
    )
    text = f"Measured on {machine(device)} by `{command}`:\n\n{table(device, args.suite, not args.skip_explorers)}"
    print(text)
    if not args.dry_run:
        write(args.section, text)


if __name__ == "__main__":
    main()
