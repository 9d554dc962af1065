"""Packaging: the wheel that `pip install .` builds, and the lock files the image and CI install from.

The wheel is built the way the image's build stage builds it: from pyproject.toml, worker/ and sql/
alone (copied to a temporary directory, so the checkout gets no build/ or *.egg-info), without build
isolation and without an index, with the setuptools that requirements-dev.lock put in this venv.
It is then installed without dependencies into a fresh virtualenv that borrows this venv's packages,
and its console script runs `--help` and `migrate` against a real database. The lock checks read
files only. Nothing here needs the network.
"""

from __future__ import annotations

import configparser
import email.parser
import itertools
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.acceptance.cli import clean_env
from worker.db.migrate import SQL_DIR, definitions_checksum, migrations

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))

#: Each lock and the requirements file scripts/lock.sh compiles it from.
LOCKS = {
    "requirements.lock": "requirements.txt",
    "requirements-demo.lock": "requirements-demo.txt",
    "requirements-dev.lock": "requirements-dev.txt",
}
BUILD_LOCK = "requirements-build.lock"
#: Each lock holds the one before it: the image runs what the demo and the tests ran.
LOCK_CHAIN = ("requirements.lock", "requirements-demo.lock", "requirements-dev.lock")
#: Directories of the repository that must never ship (at any depth of the wheel).
NOT_SHIPPED = frozenset({"standins", "demo", "tests", "bench", "scripts", "docs", "supabase", "deploy"})
STALE = "stale: run `bash scripts/lock.sh` and commit the locks"


# ---------------------------------------------------------------------------------------- lock files


@dataclass
class Pin:
    version: str
    hashes: set[str] = field(default_factory=set)
    via_files: set[str] = field(default_factory=set)  # "-r FILE" annotations: a direct requirement of FILE


@dataclass
class Lock:
    pins: dict[str, Pin]
    options: list[str]  # lines that are neither a requirement nor a comment (--index-url, -c, ...)
    problems: list[str]


def read_lock(path: Path) -> Lock:
    """A pip-compile output file: requirements with `\\`-continued --hash options and `# via` comments."""
    lock = Lock({}, [], [])
    current: Pin | None = None
    logical = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        if logical or (raw and not raw[0].isspace() and not raw.startswith("#")):
            logical += raw.removesuffix("\\").strip() + " "
            if raw.endswith("\\"):
                continue
            text, logical = logical.strip(), ""
            if text.startswith("-"):
                lock.options.append(text)
                current = None
                continue
            spec, *options = re.split(r"\s+(?=--)", text)
            req = Requirement(spec)
            name = canonicalize_name(req.name)
            specifiers = list(req.specifier)
            if len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
                lock.problems.append(f"{path.name}: {spec!r} is not pinned with ==")
                current = None
                continue
            current = lock.pins[name] = Pin(specifiers[0].version)
            for option in options:
                key, _, value = option.partition("=")
                if key == "--hash" and re.fullmatch(r"sha256:[0-9a-f]{64}", value):
                    current.hashes.add(value)
                else:
                    lock.problems.append(f"{path.name}: {name}: unexpected option {option!r}")
            if not current.hashes:
                lock.problems.append(f"{path.name}: {name} has no sha256 hash")
        elif raw.startswith("#"):
            current = None  # a comment of the file's own, not a package's annotation
        elif current is not None and raw.strip().startswith("#"):
            comment = raw.strip().lstrip("#").strip().removeprefix("via").strip()
            if comment.startswith("-r "):
                current.via_files.add(comment.split()[1])
    return lock


def direct_requirements(path: Path, *, follow: bool = True) -> dict[str, Requirement]:
    """The requirements a requirements file names, those of the files it includes (-r) too if `follow`."""
    found: dict[str, Requirement] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            if follow:
                found.update(direct_requirements(path.parent / line.split()[1]))
            continue
        assert not line.startswith("-"), f"{path.name}: {line!r}: keep options out of the readable requirements"
        req = Requirement(line)
        found[canonicalize_name(req.name)] = req
    return found


def pinned_version(req: Requirement) -> str:
    specifiers = list(req.specifier)
    assert len(specifiers) == 1, f"{req}: pin direct requirements with == (the lock holds the whole tree)"
    assert specifiers[0].operator == "==", f"{req}: pin direct requirements with =="
    return specifiers[0].version


def stale_lock_problems(lock: Lock, lock_name: str, requirements: Path) -> list[str]:
    """What the lock lacks, or holds that the requirements no longer ask for."""
    problems: list[str] = []
    wanted = direct_requirements(requirements)
    for name, req in wanted.items():
        pin = lock.pins.get(name)
        if pin is None:
            problems.append(f"{lock_name} lacks {req}")
        elif pin.version != pinned_version(req):
            problems.append(f"{lock_name} pins {name}=={pin.version}, {requirements.name} asks for {req}")
    annotated = {name for name, pin in lock.pins.items() if pin.via_files}
    problems += [f"{lock_name} holds {name} as a direct requirement, which no requirements file names any more"
                 for name in sorted(annotated - set(wanted))]
    return problems


@pytest.fixture(scope="module")
def locks() -> dict[str, Lock]:
    return {name: read_lock(REPO / name) for name in [*LOCKS, BUILD_LOCK]}


def test_every_lock_pins_every_package_with_its_hashes(locks: dict[str, Lock]) -> None:
    for name, lock in locks.items():
        assert lock.pins, f"{name} is empty"
        assert lock.problems == [], "\n".join(lock.problems)
        # This machine's pip configuration (indexes, find-links, a torch cap in /etc) stays out.
        assert lock.options == [], f"{name}: options {lock.options}: scripts/lock.sh writes none"
        text = (REPO / name).read_text(encoding="utf-8")
        for needle in ("file://", "/opt/", "/etc/", "--index-url", "--extra-index-url", "--find-links", "torch"):
            assert needle not in text, f"{name} mentions {needle!r}"


@pytest.mark.parametrize("lock_name", LOCKS)
def test_lock_is_fresh_against_its_requirements(locks: dict[str, Lock], lock_name: str) -> None:
    problems = stale_lock_problems(locks[lock_name], lock_name, REPO / LOCKS[lock_name])
    assert problems == [], STALE + "\n" + "\n".join(problems)


def test_locks_agree_with_each_other(locks: dict[str, Lock]) -> None:
    for smaller, larger in itertools.pairwise(LOCK_CHAIN):
        for name, pin in locks[smaller].pins.items():
            other = locks[larger].pins.get(name)
            assert other is not None, f"{larger} lacks {name}, which {smaller} holds; {STALE}"
            assert (other.version, other.hashes) == (pin.version, pin.hashes), (
                f"{name}: {smaller} has {pin.version}, {larger} has {other.version}; {STALE}")
    # The tests build the wheel with the build backend the image builds it with.
    build, dev = locks[BUILD_LOCK].pins, locks["requirements-dev.lock"].pins
    for name, pin in build.items():
        assert name in dev and dev[name].version == pin.version, f"{name}: {BUILD_LOCK} and requirements-dev.lock differ"


def test_build_lock_satisfies_build_system(locks: dict[str, Lock]) -> None:
    pins = locks[BUILD_LOCK].pins
    for text in PYPROJECT["build-system"]["requires"]:
        req = Requirement(text)
        pin = pins.get(canonicalize_name(req.name))
        assert pin is not None, f"{BUILD_LOCK} lacks {req}; {STALE}"
        assert req.specifier.contains(pin.version), f"{BUILD_LOCK} pins {req.name}=={pin.version}, not {req}; {STALE}"


def test_stale_lock_checker_catches_a_stale_lock(tmp_path: Path, locks: dict[str, Lock]) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        (REPO / "requirements.txt").read_text(encoding="utf-8")
        .replace("httpx==0.28.1", "httpx==0.28.2")  # bumped without re-locking
        .replace("six==1.17.0\n", "")  # dropped without re-locking
        + "pendulum==3.0.0\n",  # added without re-locking
        encoding="utf-8")
    problems = "\n".join(stale_lock_problems(locks["requirements.lock"], "requirements.lock", requirements))
    for needle in ("httpx==0.28.1, requirements.txt asks for httpx==0.28.2", "lacks pendulum==3.0.0", "holds six"):
        assert needle in problems, problems
    unhashed = tmp_path / "unhashed.lock"
    unhashed.write_text("--extra-index-url file:///opt/pypi/simple\nsix==1.17.0\n    # via -r requirements.txt\n"
                        "httpx>=0.28 \\\n    --hash=sha256:" + "0" * 64 + "\n", encoding="utf-8")
    bad = read_lock(unhashed)
    assert bad.options == ["--extra-index-url file:///opt/pypi/simple"]
    assert bad.pins["six"].via_files == {"requirements.txt"}
    assert bad.problems == ["unhashed.lock: six has no sha256 hash", "unhashed.lock: 'httpx>=0.28' is not pinned with =="]


# ----------------------------------------------------------------------------------- pyproject.toml


def test_pyproject_dependencies_are_requirements_txt() -> None:
    declared = {canonicalize_name(r.name): str(r) for r in map(Requirement, PYPROJECT["project"]["dependencies"])}
    wanted = {name: str(r) for name, r in direct_requirements(REPO / "requirements.txt").items()}
    assert declared == wanted


def test_pyproject_packages_are_the_worker_and_its_sql() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "worker").rglob("__init__.py")}
    configured = set(setuptools["packages"])
    assert configured - {"worker.sql"} == on_disk, (
        "pyproject.toml [tool.setuptools] packages must list every package under worker/ (and nothing else): "
        f"missing {sorted(on_disk - configured)}, extra {sorted(configured - on_disk - {'worker.sql'})}")
    assert setuptools["package-dir"] == {"worker.sql": "sql"}
    assert PYPROJECT["project"]["scripts"] == {"reminder-worker": "worker.cli:main"}


def test_checkout_reads_the_repositorys_sql() -> None:
    """`python worker/main.py migrate` from a checkout applies sql/ beside worker/, as it always did."""
    assert SQL_DIR == REPO / "sql"


# ------------------------------------------------------------------------------------------ the wheel


def _pip_env() -> dict[str, str]:
    """This machine's pip configuration (extra indexes, constraints) has no say: everything is local."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
               PIP_ROOT_USER_ACTION="ignore")
    return env


def _run(args: list[str | Path], *, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="rw-packaging-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="module")
def wheel(workdir: Path) -> Path:
    src = workdir / "src"
    src.mkdir()
    shutil.copy2(REPO / "pyproject.toml", src)
    for tree in ("worker", "sql"):  # what the image's build stage copies
        shutil.copytree(REPO / tree, src / tree, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = workdir / "dist"
    proc = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                 "--wheel-dir", dist, src], env=_pip_env(), cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built = list(dist.glob("*.whl"))
    assert [w.name for w in built] == ["reminder_worker-0.1.0-py3-none-any.whl"]
    return built[0]


@pytest.fixture(scope="module")
def venv(workdir: Path, wheel: Path) -> Path:
    """A fresh virtualenv with the wheel installed (--no-deps); the runtime dependencies are this
    venv's, appended to its path by a .pth file. (`--system-site-packages` would not do: a venv made by
    a venv's interpreter gets the base interpreter's site-packages, not the venv's.)"""
    venv = workdir / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv], env=_pip_env(), cwd=workdir)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                   env=_pip_env(), cwd=workdir).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (Path(purelib) / "test-venv-packages.pth").write_text("\n".join(ours) + "\n", encoding="utf-8")
    installed = _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel],
                     env=_pip_env(), cwd=workdir)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def test_wheel_holds_the_worker_and_its_sql_only(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    modules = {"worker/" + p.relative_to(REPO / "worker").as_posix()
               for p in (REPO / "worker").rglob("*.py") if "__pycache__" not in p.parts}
    sql = {"worker/sql/" + p.relative_to(REPO / "sql").as_posix() for p in (REPO / "sql").rglob("*.sql")}
    assert {"worker/sql/bootstrap.sql", "worker/sql/migrations/001_tables.sql"} <= sql
    assert modules - names == set(), "modules missing from the wheel (pyproject.toml [tool.setuptools] packages)"
    assert sql - names == set(), "SQL files missing from the wheel"
    dist_info = {n for n in names if n.startswith("reminder_worker-0.1.0.dist-info/")}
    assert names - modules - sql - dist_info == set(), "the wheel holds files that are not the worker's"
    assert not {n for n in names if NOT_SHIPPED & set(n.split("/"))}
    assert not {n for n in names if n.endswith((".pyc", ".pyo")) or "__pycache__" in n}


def test_wheel_declares_the_console_script_and_the_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        entry_points = zf.read("reminder_worker-0.1.0.dist-info/entry_points.txt").decode()
        metadata = email.parser.Parser().parsestr(zf.read("reminder_worker-0.1.0.dist-info/METADATA").decode())
    scripts = configparser.ConfigParser()
    scripts.read_string(entry_points)
    assert dict(scripts["console_scripts"]) == {"reminder-worker": "worker.cli:main"}
    assert metadata["Name"] == "reminder-worker"
    assert metadata["Requires-Python"] == ">=3.11"
    requires = sorted(str(Requirement(r)) for r in metadata.get_all("Requires-Dist") or [])
    assert requires == sorted(str(r) for r in direct_requirements(REPO / "requirements.txt").values())


def test_installed_wheel_runs_help_and_migrates_a_database(venv: Path, workdir: Path, empty_db_url: str) -> None:
    script = venv / "bin" / "reminder-worker"
    env = clean_env(DATABASE_URL=empty_db_url)

    helped = _run([script, "--help"], env=env, cwd=workdir)
    assert helped.returncode == 0, helped.stderr
    assert "migrate" in helped.stdout

    # The worker and its SQL come from the installed package, and the stand-ins and demo are not there.
    where = _run([venv / "bin" / "python", "-c",
                  "import importlib.util, worker, worker.db.migrate as m; "
                  "print(worker.__file__, m.SQL_DIR, importlib.util.find_spec('standins'), "
                  "importlib.util.find_spec('demo'), sep='\\n')"], env=env, cwd=workdir)
    assert where.returncode == 0, where.stderr
    package, sql_dir, standins, demo = where.stdout.splitlines()
    site = Path(package).parent.parent
    assert site.is_relative_to(venv) and Path(sql_dir) == site / "worker" / "sql"
    assert (standins, demo) == ("None", "None")

    migrated = _run([script, "migrate"], env=env, cwd=workdir)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert f"applied {len(migrations())} migration(s)" in migrated.stdout
    with psycopg.connect(empty_db_url) as conn:
        recorded = [r[0] for r in conn.execute("SELECT filename FROM worker.schema_migrations ORDER BY version")]
        checksum = conn.execute("SELECT checksum FROM worker.schema_definitions").fetchone()
    assert recorded == [m.name for m in migrations()]
    # The definitions the wheel applied are byte for byte the repository's sql/.
    assert checksum == (definitions_checksum(),)

    again = _run([script, "migrate"], env=env, cwd=workdir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "applied 0 migration(s)" in again.stdout
    assert "definitions (functions, triggers, grants): up to date" in again.stdout
