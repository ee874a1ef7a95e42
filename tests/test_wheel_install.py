"""`pip install .` from a built wheel gives working console scripts and carries the shipped configs.

The wheel is built from a copy of the sources (nothing written into the checkout) with
`pip wheel --no-deps --no-build-isolation` (the running venv's setuptools: no download), installed with
`--no-deps` into a fresh venv that sees the running venv's packages through a .pth file (its
dependencies, not its editable searchgym: the copy is what must be imported), and each console script
is run from the fresh venv's bin/.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("search_env", "agent_server", "trainer")
SCRIPTS = ("agent-server", "search-env", "search-trainer")


def run(*command: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib_missing("setuptools"):
        pytest.skip("setuptools is not installed in this venv")
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in (*PACKAGES, "configs"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    built = run(sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation", "-w", out, "-q")
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("searchgym-*.whl")
    return path


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


def test_the_wheel_holds_the_packages_and_configs(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    for package in PACKAGES:
        assert f"{package}/__init__.py" in names
    assert "search_env/world/generator.py" in names or any(n.startswith("search_env/world/") for n in names)
    configs = {Path(n).name for n in names if "/share/searchgym/configs/" in n}
    assert configs == {p.name for p in (REPO / "configs").glob("*.yaml")}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert all(f"{script} = " in text for script in SCRIPTS)
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    made = run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip())
    # The running venv's packages (the dependencies), after the fresh venv's own site-packages.
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (purelib / "test-deps.pth").write_text("\n".join(deps) + "\n")
    # The fresh venv's python runs pip (the running venv's, seen through the .pth), so the scripts'
    # shebangs name the fresh interpreter; --ignore-installed: pip also sees the editable searchgym.
    done = run(python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", wheel)
    assert done.returncode == 0, done.stderr
    return venv


def clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return env | {"PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_console_scripts_run_from_the_installed_wheel(installed: Path, script: str, tmp_path: Path):
    path = installed / "bin" / script
    assert path.is_file(), f"{script} was not installed"
    assert path.read_text().splitlines()[0] == f"#!{installed / 'bin' / 'python'}"
    result = run(path, "--help", env=clean_env(installed), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"usage: {script}" in result.stdout


def test_the_installed_code_and_configs_are_used(installed: Path, tmp_path: Path):
    """From outside the checkout, the packages come from the wheel and the shipped configs are found."""
    code = (
        "import search_env, trainer; from trainer.shipped_configs import shipped_config; "
        "print(search_env.__file__); print(shipped_config('embedded.yaml'))"
    )
    result = run(installed / "bin" / "python", "-c", code, env=clean_env(installed), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    module, config = result.stdout.split()
    assert Path(module).is_relative_to(installed), module
    assert Path(config).is_relative_to(installed) and Path(config).is_file(), config
