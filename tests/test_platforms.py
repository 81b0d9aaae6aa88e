"""Platforms: the requirement files give every supported platform a torch that its index serves;
`doctor` points an NVIDIA GPU at the CUDA build; float64 checks leave a device without float64;
the Colab cell installs the package on Colab only."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
import torch
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement

from metaadv_edu import cli, colab, device, notebooks

ROOT = Path(__file__).resolve().parent.parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

PLATFORMS = {
    "linux x86-64": dict(sys_platform="linux", platform_system="Linux", os_name="posix", platform_machine="x86_64"),
    "windows x86-64": dict(sys_platform="win32", platform_system="Windows", os_name="nt", platform_machine="AMD64"),
    "macos arm64": dict(sys_platform="darwin", platform_system="Darwin", os_name="posix", platform_machine="arm64"),
}
PYTHONS = ("3.11", "3.12")


def environment(platform: str, python: str) -> dict[str, str]:
    env = dict(default_environment())
    env.update(
        PLATFORMS[platform],
        python_version=python,
        python_full_version=f"{python}.0",
        implementation_name="cpython",
        platform_python_implementation="CPython",
    )
    return env


def read_requirements(path: Path) -> tuple[list[Requirement], list[str]]:
    """The requirements of a pip requirements file, following ``-r`` as pip does (relative to the
    including file), and its option lines (``--extra-index-url …``, ``-e .``)."""
    reqs, options = [], []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-r "):
            more, more_options = read_requirements(path.parent / line[3:].strip())
            reqs += more
            options += more_options
        elif line.startswith("-"):
            options.append(line)
        else:
            reqs.append(Requirement(line))
    return reqs, options


def key(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def applying(reqs: list[Requirement], env: dict[str, str]) -> list[Requirement]:
    return [r for r in reqs if r.marker is None or r.marker.evaluate(env)]


def only_torch(reqs: list[Requirement], env: dict[str, str]) -> Requirement:
    torches = [r for r in applying(reqs, env) if key(r.name) == "torch"]
    assert len(torches) == 1, f"{len(torches)} torch requirements apply: {[str(t) for t in torches]}"
    return torches[0]


def pinned_version(req: Requirement) -> str:
    spec = list(req.specifier)
    assert len(spec) == 1 and spec[0].operator == "==", f"not pinned to one version: {req}"
    return spec[0].version


# --------------------------------------------------------------------------- requirement files
@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_learner_file_gives_each_platform_one_torch_that_its_index_serves(platform, python):
    reqs, options = read_requirements(ROOT / "binder" / "requirements.txt")
    version = pinned_version(only_torch(reqs, environment(platform, python)))
    if platform == "macos arm64":
        assert version == "2.13.0", "PyTorch's macOS wheels carry no local label such as +cpu"
    else:
        assert version == "2.13.0+cpu", "Linux and Windows get the CPU-only build"
        assert f"--extra-index-url {CPU_INDEX}" in options, "the CPU index must be named in the file"
    assert "-e ." in options, "the learner's one command installs this package too"


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_cuda_file_gives_a_cuda_build_on_linux_and_windows(platform, python):
    cpu, _ = read_requirements(ROOT / "binder" / "requirements.txt")
    cuda, options = read_requirements(ROOT / "binder" / "requirements-cuda.txt")
    env = environment(platform, python)
    version = pinned_version(only_torch(cuda, env))
    if platform == "macos arm64":
        assert version == pinned_version(only_torch(cpu, env))
    else:
        base, _, label = version.partition("+")
        assert base == "2.13.0" and label.startswith("cu"), version
        assert f"--extra-index-url https://download.pytorch.org/whl/{label}" in options
    # the same pins for everything else
    rest = lambda rs: sorted(str(r) for r in applying(rs, env) if key(r.name) != "torch")  # noqa: E731
    assert rest(cuda) == rest(cpu)
    assert "-e ." in options


def test_intel_macs_get_no_torch_pin():
    reqs, _ = read_requirements(ROOT / "binder" / "requirements.txt")
    env = environment("macos arm64", "3.11") | {"platform_machine": "x86_64"}
    assert not [r for r in applying(reqs, env) if key(r.name) == "torch"]


@pytest.mark.parametrize("name", ["binder/requirements.txt", "binder/requirements-cuda.txt", "requirements-dev.txt"])
def test_every_requirement_is_pinned_once(name):
    reqs, options = read_requirements(ROOT / name)
    for platform in PLATFORMS:
        for python in PYTHONS:
            seen = {}
            for req in applying(reqs, environment(platform, python)):
                pinned_version(req)
                assert key(req.name) not in seen, f"{req.name} pinned twice for {platform}"
                seen[key(req.name)] = req
            assert not any(n.startswith("nvidia-") for n in seen), "CUDA libraries come with torch's CUDA build only"
    # only the options a learner's pip needs: PyTorch's index and the package itself
    for option in options:
        assert option == "-e ." or option.startswith("--extra-index-url https://download.pytorch.org/whl/"), option


def test_dev_file_adds_the_test_tools_to_the_learner_file():
    lines = (ROOT / "requirements-dev.txt").read_text().splitlines()
    assert "-r binder/requirements.txt" in lines
    dev, options = read_requirements(ROOT / "requirements-dev.txt")
    learner, _ = read_requirements(ROOT / "binder" / "requirements.txt")
    assert {str(r) for r in learner} <= {str(r) for r in dev}
    names = {key(r.name) for r in dev}
    for tool in ("pytest", "nbval", "hypothesis", "playwright", "pytest-xdist", "jupytext", "ruff"):
        assert tool in names, tool
        assert tool not in {key(r.name) for r in learner}, f"{tool} is a developer's tool, not the learner's"
    assert "-e ." in options


def test_pyproject_bounds_admit_the_pins():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev, _ = read_requirements(ROOT / "requirements-dev.txt")
    env = environment("linux x86-64", "3.11")
    pins = {key(r.name): pinned_version(r) for r in applying(dev, env)}
    for line in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(line)
        assert key(req.name) in pins, f"{req.name} is declared in pyproject.toml but pinned nowhere"
        assert req.specifier.contains(pins[key(req.name)], prereleases=True), f"{pins[key(req.name)]} violates {req}"


def test_binder_environment_is_self_contained_and_matches_the_pins():
    env_file = yaml.safe_load((ROOT / "binder" / "environment.yml").read_text())
    deps = env_file["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    options = [line for line in pip if line.startswith("-")]
    assert options == [f"--extra-index-url {CPU_INDEX}"], "no -r or -e: repo2docker caches only a self-contained file"
    binder = sorted(str(Requirement(line)) for line in pip if not line.startswith("-"))
    reqs, _ = read_requirements(ROOT / "binder" / "requirements.txt")
    expected = sorted(f"{r.name}{r.specifier}" for r in applying(reqs, environment("linux x86-64", "3.11")))
    assert binder == expected
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install --no-cache-dir --no-deps -e ." in post_build
    assert os.access(ROOT / "binder" / "postBuild", os.X_OK)
    assert not (ROOT / "binder" / "runtime.txt").exists(), "repo2docker ignores runtime.txt beside environment.yml"


@pytest.mark.parametrize(
    ("cpu_max", "preset", "threads"),
    [
        ("150000 100000", None, "2"),  # a quota of 1.5 CPUs: two threads
        ("50000 100000", None, "1"),
        ("max 100000", None, None),  # no quota: torch's own choice
        ("150000 100000", "1", "1"),  # the user's setting wins
    ],
)
def test_binder_start_matches_torch_threads_to_the_cpu_quota(tmp_path, cpu_max, preset, threads):
    start = ROOT / "binder" / "start"
    assert os.access(start, os.X_OK)
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    env["METAADV_CPU_MAX"] = str(tmp_path / "cpu.max")
    if preset:
        env["OMP_NUM_THREADS"] = preset
    # torch is imported (seconds) in one case only, one whose count differs from torch's default on 2 or more cores
    torch_probe = cpu_max == "50000 100000"
    probe = "import os; print(os.environ.get('OMP_NUM_THREADS'), os.environ['OMP_WAIT_POLICY'])"
    if torch_probe:
        probe = "import torch; " + probe[:-1] + ", torch.get_num_threads())"
    out = subprocess.run(
        [str(start), sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    assert out[:2] == [str(threads), "PASSIVE"]
    if torch_probe:
        assert out[2] == threads, "torch did not take its thread count from OMP_NUM_THREADS"


def test_readme_names_the_setup_gpu_and_test_commands():
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("\n", 1)[1].strip() for b in quick.split("```")[1::2]]
    assert "pip install -r binder/requirements.txt" in blocks
    assert "pip install -r requirements-dev.txt\npytest" in blocks
    assert cli.GPU_SETUP_COMMAND in text.split("## Devices", 1)[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -r requirements-dev.txt" in ci and "\npytest" in ci


# --------------------------------------------------------------------------- doctor
def _fake_nvidia_smi(folder: Path) -> None:
    exe = folder / ("nvidia-smi.bat" if sys.platform == "win32" else "nvidia-smi")
    exe.write_text("@echo off\r\n" if sys.platform == "win32" else "#!/bin/sh\necho 'NVIDIA-SMI fake'\n")
    exe.chmod(0o755)


def test_doctor_points_an_nvidia_gpu_at_the_cuda_build(tmp_path, monkeypatch, capsys):
    _fake_nvidia_smi(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setattr(torch.version, "cuda", None)
    cli.main(["doctor"])
    out = capsys.readouterr().out
    assert "NVIDIA GPU" in out and "CPU-only build" in out
    assert f"    {cli.GPU_SETUP_COMMAND}\n" in out


def test_doctor_gives_no_gpu_hint_without_nvidia_smi(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no nvidia-smi
    cli.main(["doctor"])
    out = capsys.readouterr().out
    assert cli.GPU_SETUP_COMMAND not in out and "NVIDIA GPU" not in out


def test_doctor_reports_a_cuda_build_that_cannot_see_the_gpu(tmp_path, monkeypatch, capsys):
    _fake_nvidia_smi(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setattr(torch.version, "cuda", "12.9")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "✗ NVIDIA GPU" in out and "cannot use it" in out and cli.GPU_SETUP_COMMAND not in out


def test_doctor_reports_mps_truthfully(monkeypatch, capsys):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    cli.main(["doctor"])
    out = capsys.readouterr().out
    assert "✓ Apple MPS" in out and "available: the notebooks compute on it; float64 checks run on the CPU" in out


# --------------------------------------------------------------------------- float64 rule
def test_mps_has_no_float64_and_the_cpu_and_cuda_have_it():
    assert not device.supports_float64("mps")
    assert device.supports_float64("cpu") and device.supports_float64(torch.device("cuda", 0))


def test_float64_device_keeps_a_device_that_has_float64(capsys):
    assert device.float64_device("cpu") == torch.device("cpu")
    assert device.float64_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert capsys.readouterr().out == ""


def test_float64_checks_leave_a_device_without_float64_visibly(monkeypatch, capsys):
    # simulate a device without float64 (as MPS is); no such hardware is needed to test the rule
    monkeypatch.setattr(device, "supports_float64", lambda d: torch.device(d).type == "cpu")
    check = device.float64_device(torch.device("cuda", 0))
    assert check == torch.device("cpu")
    assert "float64 checks run on the CPU: cuda has no float64" in capsys.readouterr().out
    assert device.float64_device("cuda", verbose=False) == torch.device("cpu")
    assert capsys.readouterr().out == ""
    # and a float64 computation there works
    x = torch.linspace(0, 1, 5, dtype=torch.float64, device=check)
    assert x.dtype == torch.float64 and x.device == check
    assert device.float64_device("mps", verbose=False) == torch.device("cpu")


def test_meta_learning_checks_handed_a_device_without_float64_compute_on_the_cpu(monkeypatch):
    from metaadv_edu import meta_checks

    monkeypatch.setattr(device, "supports_float64", lambda d: torch.device(d).type == "cpu")
    placed = []
    real = torch.Tensor.to

    def record(self, *args, **kwargs):  # every float64 tensor moved anywhere must land on the CPU
        out = real(self, *args, **kwargs)
        if out.dtype == torch.float64:
            placed.append(out.device.type)
        return out

    monkeypatch.setattr(torch.Tensor, "to", record)
    net, task = meta_checks.sine_net64(torch.device("meta")), meta_checks.sine_task64(torch.device("meta"))
    assert {p.device.type for p in net.parameters()} == {"cpu"} and task.x_support.device.type == "cpu"
    assert max(meta_checks.meta_gradient_errors(device=torch.device("meta")).values()) < meta_checks.TOL
    assert set(placed) <= {"cpu"}


# --------------------------------------------------------------------------- Colab
@pytest.fixture
def pip_calls(monkeypatch):
    calls = []

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return subprocess.CompletedProcess(args, 0)

    for name in ("run", "call", "check_call", "check_output", "Popen"):
        monkeypatch.setattr(subprocess, name, record)
    return calls


def test_colab_cell_does_nothing_outside_colab(monkeypatch, pip_calls, capsys):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(colab.COLAB_CELL, "<colab cell>", "exec"), {})
    assert pip_calls == [] and capsys.readouterr().out == ""


def test_colab_cell_installs_the_package_with_loose_dependencies_on_colab(monkeypatch, pip_calls, capsys):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    exec(compile(colab.COLAB_CELL, "<colab cell>", "exec"), {})
    assert len(pip_calls) == 1
    (argv,), kwargs = pip_calls[0]
    assert argv == [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "metaadv-edu @ git+https://github.com/metaadv-edu/metaadv-edu",
    ]
    assert kwargs == {"check": True}
    assert not any("binder" in a or "requirements" in a for a in argv), "never the Binder pins on Colab"
    assert "installed metaadv-edu" in capsys.readouterr().out


def test_colab_cell_is_plain_python():
    assert not any(line.lstrip().startswith(("!", "%")) for line in colab.COLAB_CELL.splitlines())


def test_colab_badge():
    url = "https://colab.research.google.com/github/metaadv-edu/metaadv-edu/blob/main/notebooks/05_maml.ipynb"
    assert (
        colab.colab_badge("05_maml")
        == f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"
    )
    assert colab.colab_badge("05_maml.ipynb") == colab.colab_badge("05_maml")
    with pytest.raises(ValueError, match="name"):
        colab.colab_badge("../secrets")
    with pytest.raises(TypeError, match="name"):
        colab.colab_badge(5)


def test_every_notebook_opens_with_the_colab_badge_and_cell():
    paths = notebooks.find_notebooks(ROOT / "notebooks")
    assert paths
    for path in paths:
        nb = nbformat.read(str(path), as_version=4)
        first_md = next(c for c in nb.cells if c.cell_type == "markdown")
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert colab.colab_badge(path.stem) in first_md.source, f"{path.name}: no Colab badge in its first cell"
        assert first_code.source.strip() == colab.COLAB_CELL.strip(), f"{path.name}: first code cell is not COLAB_CELL"
