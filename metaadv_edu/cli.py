"""The ``metaadv-edu`` command: ``doctor``, ``execute``, ``demo``, ``student``, ``grade`` and ``site``.

Run ``metaadv-edu COMMAND --help`` for the options of each.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

__all__ = ["GPU_SETUP_COMMAND", "main"]

#: The README's second setup command: the pinned environment with PyTorch's CUDA build.
GPU_SETUP_COMMAND = "pip install -r binder/requirements-cuda.txt"


def _notebooks_dir() -> Path:
    here = Path.cwd() / "notebooks"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "notebooks"


def _widgets_extension() -> tuple[bool, str]:
    """Whether JupyterLab will find the prebuilt ipywidgets extension."""
    try:
        from jupyter_core.paths import jupyter_path
    except ImportError:
        return False, "jupyter_core is not installed (install JupyterLab)"
    for base in jupyter_path("labextensions"):
        pkg = Path(base) / "@jupyter-widgets" / "jupyterlab-manager" / "package.json"
        if pkg.exists():
            disabled = _labextension_disabled("@jupyter-widgets/jupyterlab-manager")
            if disabled:
                return False, f"installed at {pkg.parent} but disabled in JupyterLab's settings"
            return True, f"enabled ({pkg.parent})"
    return False, "not found: pip install jupyterlab_widgets (comes with ipywidgets 8)"


def _labextension_disabled(name: str) -> bool:
    import json

    try:
        from jupyter_core.paths import jupyter_config_path
    except ImportError:
        return False
    for base in jupyter_config_path():
        cfg = Path(base) / "labconfig" / "page_config.json"
        if cfg.exists():
            try:
                if json.loads(cfg.read_text()).get("disabledExtensions", {}).get(name):
                    return True
            except (OSError, ValueError):
                continue
    return False


def _cache_writable() -> tuple[bool, str]:
    from metaadv_edu.cache import cache_dir

    path = cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as exc:
        return False, f"{path} is not writable ({exc}); set METAADV_CACHE to a writable folder"
    return True, f"{path} (writable)"


def _accelerators(torch) -> tuple[list[tuple[str, str, bool]], list[str]]:
    """Rows about the GPU (NVIDIA or Apple) and hints for the lines below the table.

    An NVIDIA GPU with a CPU-only build of torch is not an error (the course runs on the CPU), but
    the hint gives the one command that installs the CUDA build.
    """
    import shutil

    rows, hints = [], []
    if shutil.which("nvidia-smi") is not None:
        if torch.version.cuda is None:
            rows.append(("NVIDIA GPU", "found (nvidia-smi), but this torch is a CPU-only build", True))
            hints.append(
                "To compute on the NVIDIA GPU, install PyTorch's CUDA build from the repository root:\n"
                f"    {GPU_SETUP_COMMAND}"
            )
        elif torch.cuda.is_available():
            rows.append(
                ("NVIDIA GPU", f"in use by torch: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})", True)
            )
        else:
            rows.append(
                (
                    "NVIDIA GPU",
                    f"found (nvidia-smi), but torch (CUDA {torch.version.cuda}) cannot use it: "
                    "update the NVIDIA driver, or see the README's Devices section",
                    False,
                )
            )
    backend = getattr(torch.backends, "mps", None)
    if backend is not None and backend.is_available():
        rows.append(("Apple MPS", "available: the notebooks compute on it; float64 checks run on the CPU", True))
    elif sys.platform == "darwin":
        rows.append(("Apple MPS", "not available (needs Apple silicon, macOS 12.3 or later): the CPU is used", True))
    return rows, hints


def doctor(_args) -> int:
    import torch

    from metaadv_edu import pick_device

    ok = True
    rows = [("python", f"{platform.python_version()} ({sys.executable})", True)]
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    rows.append(("torch", f"{torch.__version__} — {build}", True))
    try:
        device = pick_device()
        detail = str(device)
        if device.type == "cuda":
            detail += f" ({torch.cuda.get_device_name(device)})"
        env = os.environ.get("METAADV_DEVICE")
        detail += f" — from METAADV_DEVICE={env}" if env else " — automatic choice"
        rows.append(("device", detail, True))
    except ValueError as exc:
        rows.append(("device", str(exc), False))
    gpu_rows, hints = _accelerators(torch)
    rows.extend(gpu_rows)
    widgets_ok, widgets_detail = _widgets_extension()
    rows.append(("widgets extension", widgets_detail, widgets_ok))
    cache_ok, cache_detail = _cache_writable()
    rows.append(("model cache", cache_detail, cache_ok))
    nb_dir = _notebooks_dir()
    from metaadv_edu.notebooks import find_notebooks

    count = len(find_notebooks(nb_dir)) if nb_dir.is_dir() else 0
    rows.append(("notebooks", f"{count} in {nb_dir}" if count else "course notebooks not found", count > 0))
    width = max(len(r[0]) for r in rows)
    for name, detail, good in rows:
        ok &= good
        print(f"{'✓' if good else '✗'} {name:<{width}}  {detail}")
    for hint in hints:
        print(hint)
    print(
        "All good: open the course with `jupyter lab notebooks/`."
        if ok
        else "Some checks failed: see the lines marked ✗."
    )
    return 0 if ok else 1


def execute(args) -> int:
    from metaadv_edu.notebooks import execute_notebook, find_notebooks, pair_difference, stale_reason, sync_pair

    paths = [p for target in (args.notebooks or [str(_notebooks_dir())]) for p in find_notebooks(target)]
    if not paths:
        print("no notebooks found", file=sys.stderr)
        return 2
    if args.check:
        stale = [(p, r) for p in paths if (r := "; ".join(filter(None, (stale_reason(p), pair_difference(p)))))]
        for p, reason in stale:
            print(f"stale: {p.name}: {reason}")
        print(f"{len(paths) - len(stale)} of {len(paths)} notebooks have current outputs")
        return 1 if stale else 0
    if args.retrain:
        return _retrain(paths, args.timeout)
    if args.stale:
        paths = [p for p in paths if stale_reason(p) or pair_difference(p)]
        print(f"{len(paths)} stale: {', '.join(p.name for p in paths) or 'nothing to execute'}", flush=True)
    for path in paths:
        side = sync_pair(path)
        if side != "unchanged":
            print(f"synced {path.name} from its {'text twin' if side == 'text' else 'notebook'}", flush=True)
        if args.sync_only:
            continue
        print(f"executing {path.name} …", flush=True)
        seconds = execute_notebook(path, timeout=args.timeout)
        sync_pair(path)  # execution may add notebook metadata (the kernel) that the twin records
        print(f"  done in {seconds:.1f} s", flush=True)
    return 0


def _retrain(paths, timeout: int) -> int:
    """Execute the given notebooks with an empty model cache and the shipped weights ignored, so that each
    model they use is trained from scratch; then make those models the package's shipped weights.

    With every notebook the shipped folder is replaced by what the run trained. With some notebooks only
    their models are replaced (and files that only they used before and no longer train are removed); the
    other notebooks that load a replaced model are named, since their outputs are now stale.
    """
    import shutil

    from metaadv_edu import cache
    from metaadv_edu.notebooks import execute_notebook, find_notebooks, recorded_weights, stale_reason, sync_pair

    course = find_notebooks(_notebooks_dir())
    chosen = {p.resolve() for p in paths}
    whole_course = chosen == {p.resolve() for p in course}
    others = [p for p in course if p.resolve() not in chosen]
    before = {p.resolve(): set(recorded_weights(p)) for p in course}
    saved = {k: os.environ.get(k) for k in (cache.ENV_VAR, cache.SHIPPED_ENV_VAR)}
    with tempfile.TemporaryDirectory(prefix="metaadv-retrain-") as tmp:
        os.environ[cache.ENV_VAR], os.environ[cache.SHIPPED_ENV_VAR] = tmp, "0"
        try:
            for path in paths:
                sync_pair(path)
                print(f"executing {path.name}, training its models …", flush=True)
                print(f"  done in {execute_notebook(path, timeout=timeout):.1f} s", flush=True)
                sync_pair(path)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        trained = sorted(Path(tmp).glob("*.pt"))
        if whole_course:
            shutil.rmtree(cache.SHIPPED, ignore_errors=True)
            cache.SHIPPED.mkdir()
        else:
            names = {f.name for f in trained}
            dropped = set().union(*(before[p.resolve()] for p in paths)) - names
            dropped -= set().union(set(), *(before[p.resolve()] for p in others))
            for name in sorted(dropped):
                (cache.SHIPPED / name).unlink(missing_ok=True)
        for file in trained:
            shutil.copy2(file, cache.SHIPPED / file.name)
        size = sum(f.stat().st_size for f in trained) / 2**20
    for path in paths:
        _record_current_weights(path)
    print(f"{len(trained)} trained models ({size:.1f} MiB) written to {cache.SHIPPED}")
    stale = [p.name for p in others if stale_reason(p)]
    if stale:
        print(f"these notebooks load a retrained model and are now stale: {', '.join(stale)}")
        print("refresh them with: metaadv-edu execute " + " ".join(f"notebooks/{name}" for name in stale))
    return 0


def _record_current_weights(path: Path) -> None:
    """The weights a notebook just trained became the shipped files: record their digests as its own."""
    import nbformat

    from metaadv_edu import dependencies
    from metaadv_edu.notebooks import META_KEY

    nb = nbformat.read(str(path), as_version=4)
    recorded = nb.metadata[META_KEY]["dependencies"]
    recorded["weights"] = {name: dependencies.weight_digest(name) for name in recorded["weights"]}
    nbformat.write(nb, str(path))


def demo(args) -> int:
    import shutil
    import subprocess

    nb_dir = _notebooks_dir()
    name = args.notebook if args.notebook.endswith(".ipynb") else args.notebook + ".ipynb"
    matches = [p for p in nb_dir.glob("*.ipynb") if p.name == name or p.name.startswith(args.notebook)]
    if not matches:
        print(f"no notebook named {args.notebook!r} in {nb_dir}", file=sys.stderr)
        return 2
    voila = shutil.which("voila")
    if voila is None:
        print("voila is not installed: pip install voila", file=sys.stderr)
        return 2
    cmd = [voila, str(matches[0].name), f"--port={args.port}", f"--Voila.root_dir={nb_dir}", "--strip_sources=True"]
    if args.no_browser:
        cmd.append("--no-browser")
    return subprocess.call(cmd, cwd=nb_dir)


def student(args) -> int:
    from metaadv_edu.notebooks import find_notebooks, notebook_text, student_notebook

    source = Path(args.source) if args.source else _notebooks_dir()
    paths = find_notebooks(source)
    out = Path(args.outdir)
    if out.resolve() == source.resolve():
        print("OUTDIR must differ from the notebooks folder (the copies drop the solutions)", file=sys.stderr)
        return 2
    planned, total = [], 0
    for path in paths:
        nb, count = student_notebook(path, keep_solutions=args.nbgrader_source)
        planned.append((out / path.name, notebook_text(nb), count))
        total += count
    differing = [t for t, text, _ in planned if t.exists() and t.read_text(encoding="utf-8") != text]
    if differing and not args.force:
        print(
            f"{len(differing)} file(s) in {out} differ from the copies this would write (a learner may have "
            "worked in them); nothing was written. Move them away, or overwrite them with --force:",
            file=sys.stderr,
        )
        for target in differing:
            print(f"    {target}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    done = "marked for nbgrader, with hidden test cells" if args.nbgrader_source else "cleared"
    for target, text, count in planned:
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            print(f"{target}: {count} solution(s) {done}, outputs cleared")
        else:
            print(f"{target}: unchanged")
    kind = "nbgrader source notebooks" if args.nbgrader_source else "learner's copies"
    print(f"{len(paths)} {kind} in {out} ({total} solutions)")
    return 0


def _read_points(path: str | None) -> dict[str, float]:
    """A teacher's points per exercise, ``{exercise name: points}``, from a JSON or TOML file."""
    if path is None:
        return {}
    import json

    import tomllib

    text = Path(path).read_text(encoding="utf-8")
    table = tomllib.loads(text) if path.endswith(".toml") else json.loads(text)
    if not isinstance(table, dict) or not all(isinstance(v, int | float) and v >= 0 for v in table.values()):
        raise ValueError(f"--points {path}: expected a table of exercise name = points ≥ 0")
    return {str(k): float(v) for k, v in table.items()}


def _unwritable(path: str) -> str | None:
    """Why a file cannot be written at ``path``, or None; creates nothing."""
    target = Path(path).absolute()
    if target.is_dir():
        return "a folder"
    # the file, or the nearest folder that exists (write_csv makes the folders in between)
    existing = target if target.exists() else next(p for p in target.parents if p.exists())
    return None if os.access(existing, os.W_OK) else f"{existing} is not writable"


def grade(args) -> int:
    import time

    from metaadv_edu.display import table
    from metaadv_edu.submissions import grade_class, write_csv

    if args.no_execute:
        print(
            "--no-execute is gone: stored outputs are text the learner controls, so grades come only from "
            "running the course's graders",
            file=sys.stderr,
        )
        return 2
    folder, course = Path(args.folder), Path(args.course) if args.course else _notebooks_dir()
    if not folder.is_dir():
        print(f"{folder} is not a folder of submitted notebooks", file=sys.stderr)
        return 2
    try:
        points = _read_points(args.points)
    except (OSError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    problem = _unwritable(args.csv) if args.csv else None
    if problem:  # a gradebook that cannot be written is said before the class is graded, not after
        print(f"--csv {args.csv}: cannot write there ({problem})", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        rows = grade_class(
            folder,
            course,
            jobs=args.jobs,
            timeout=args.timeout,
            notebook_timeout=args.notebook_timeout,
            points=points,
            progress=not args.quiet,
        )
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not rows:
        print(f"no notebooks in {folder}", file=sys.stderr)
        return 2
    csv_error = None
    if args.csv:  # first: a console that cannot show a learner's name must not cost the gradebook
        try:
            write_csv(rows, args.csv)
        except OSError as exc:  # e.g. the file opened in a spreadsheet meanwhile: the table below still shows
            csv_error = exc
    if hasattr(sys.stdout, "reconfigure"):  # a name the console's encoding lacks is printed escaped
        sys.stdout.reconfigure(errors="backslashreplace")
    by_file: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        by_file.setdefault((row["learner"], row["notebook"]), []).append(row)
    lines = []
    for (learner, notebook), group in by_file.items():
        graded = [r for r in group if r["exercise"]]
        got, worth = sum(float(r["points"]) for r in group), sum(float(r["max_points"]) for r in group)
        wrong = [r["exercise"] for r in graded if r["passed"] == "0"]
        lines.append((learner, notebook, f"{got:g}/{worth:g}", ", ".join(wrong) or "—", group[0]["note"] or "—"))
    table(lines, ("learner", "notebook", "points", "not yet right", "notes"))
    unreadable = sum(group[0]["result"] == "not graded" for group in by_file.values())
    timed_out = sum(r["result"].startswith("timed out") for r in rows)
    print(
        f"graded {len(by_file)} notebooks of {len({k[0] for k in by_file})} learners in "
        f"{time.perf_counter() - start:.0f} s with {args.jobs} kernel(s): {len(rows)} exercise rows, "
        f"{sum(r['passed'] == '1' for r in rows)} passed, {timed_out} timed out, {unreadable} file(s) not gradable"
    )
    if csv_error is not None:
        print(f"the gradebook could not be written to {args.csv}: {csv_error}", file=sys.stderr)
        return 1
    if args.csv:
        print(f"{len(rows)} rows written to {args.csv}")
    return 0


def site(args) -> int:
    import time

    from metaadv_edu.site import build_site

    start = time.perf_counter()
    try:
        pages = build_site(args.outdir, root=args.root or _notebooks_dir().parent)
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.outdir)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(
        f"{len(pages)} pages written to {out} ({size / 2**20:.1f} MiB) in {time.perf_counter() - start:.1f} s; "
        f"open {out / 'index.html'}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metaadv-edu", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("doctor", help="check this machine for the course")
    p.set_defaults(func=doctor)
    p = sub.add_parser("execute", help="sync each notebook with its text twin, then re-execute it in place")
    p.add_argument("notebooks", nargs="*", help="notebooks or folders (default: notebooks/)")
    p.add_argument("--check", action="store_true", help="only report notebooks with stale outputs")
    p.add_argument(
        "--stale", action="store_true", help="execute only the notebooks whose outputs or text twins are stale"
    )
    p.add_argument(
        "--sync-only",
        action="store_true",
        help="only sync each notebook with its text twin in notebooks/src/, do not execute",
    )
    p.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    p.add_argument(
        "--retrain",
        action="store_true",
        help="train from scratch every model the given notebooks use (no notebook given: all of them) while "
        "executing them, and make those models the package's shipped weights (metaadv_edu/weights/); names the "
        "other notebooks that load a retrained model",
    )
    p.set_defaults(func=execute)
    p = sub.add_parser("demo", help="serve a notebook as a Voilà app")
    p.add_argument("notebook", help="e.g. 01_fgsm")
    p.add_argument("--port", type=int, default=8866)
    p.add_argument("--no-browser", action="store_true")
    p.set_defaults(func=demo)
    p = sub.add_parser("student", help="write learner's copies: solutions cleared, outputs cleared")
    p.add_argument("outdir", help="folder for the copies")
    p.add_argument("--source", help="notebook folder (default: notebooks/)")
    p.add_argument(
        "--nbgrader-source",
        action="store_true",
        help="write nbgrader source notebooks instead (solutions kept, cells marked for "
        "`nbgrader generate_assignment`, a hidden autograder test cell per exercise)",
    )
    p.add_argument("--force", action="store_true", help="overwrite files in OUTDIR that differ from the copies")
    p.set_defaults(func=student)
    p = sub.add_parser("grade", help="grade a folder of submitted notebooks with the course's graders")
    p.add_argument("folder", help="folder of learners' notebooks (searched recursively), one folder per learner")
    p.add_argument("--course", help="folder of the course notebooks to grade against (default: notebooks/)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="notebooks graded in parallel (one kernel each)")
    p.add_argument("--timeout", type=int, default=120, help="seconds allowed per cell (default: 120)")
    p.add_argument("--notebook-timeout", type=int, default=900, help="seconds allowed per notebook (default: 900)")
    p.add_argument("--csv", help="also write one row per learner, notebook and exercise to this CSV file")
    p.add_argument("--points", help="JSON or TOML table of exercise name = points, overriding the course's")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-execute", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=grade)
    p = sub.add_parser("site", help="build the course website from the stored notebooks (no execution)")
    p.add_argument("outdir", nargs="?", default="build/site", help="output folder, replaced (default: build/site)")
    p.add_argument(
        "--root",
        default=None,
        help="repository with notebooks/ and README.md (default: the current folder "
        "if it has notebooks/, else this package's checkout)",
    )
    p.set_defaults(func=site)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
