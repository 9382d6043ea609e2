"""The layers the folder layout promises, checked on the source: the ground imports nothing
above it, a stage imports only the ground and itself, commands and orchestration sit on top.

Read from the syntax tree, not by importing: an import inside a function counts as much as
one at the top (most of this code imports lazily), and so does a module that the CLI's
`LAZY_COMMANDS` table names as a string. Only a script's `if __name__ == "__main__":` block
is left out: run as a script, a module is the top of its own program.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
PACKAGES = ("cinema", "producer", "loader", "metabase", "dags")
# Project folders outside the layers: code in the layers never imports them.
OUTSIDE = ("tests", "bench", "scripts")
GROUND = "ground"
TOP = "top"

# A package whose modules each take their own place below: its name covers only its __init__.
MIXED = ("cinema",)
# (module or package, layer): the longest matching name decides. A stage's name is its layer.
LAYERS = (
    # Settings, connections and names every stage shares.
    ("cinema", GROUND),
    ("cinema.settings", GROUND),
    ("cinema.context", GROUND),
    ("cinema.names", GROUND),
    ("cinema.paths", GROUND),
    ("cinema.logs", GROUND),
    ("cinema.db", GROUND),
    ("cinema.warehouse", GROUND),
    ("cinema.replication", GROUND),
    ("cinema.envfile", GROUND),
    ("cinema.console", GROUND),
    ("cinema.signals", GROUND),
    ("cinema.retrying", GROUND),
    ("cinema.sandbox", GROUND),
    # Stages: each reads and writes one part of the pipeline.
    ("producer", "producer"),
    ("loader", "loader"),
    ("cinema.stack", "engines"),
    ("cinema.transform", "dbt"),
    ("cinema.dbt_chdb_bridge", "dbt"),
    ("metabase", "metabase"),
    ("cinema.report", "report"),
    # Commands and orchestration, which may use every stage.
    ("cinema.cli", TOP),
    ("cinema.orchestrate", TOP),
    ("cinema.reconcile", TOP),
    ("cinema.status", TOP),
    ("cinema.live", TOP),
    ("cinema.airflow_standalone", TOP),
    ("dags", TOP),
)


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int


def layer_of(module: str) -> str | None:
    matches = [
        (name, layer)
        for name, layer in LAYERS
        if module == name or (module.startswith(f"{name}.") and name not in MIXED)
    ]
    return max(matches, key=lambda match: len(match[0]))[1] if matches else None


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_main_block(node: ast.stmt) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(value, ast.Constant) and value.value == "__main__" for value in test.comparators)
    )


def _lazy_commands(tree: ast.Module) -> list[tuple[str, int]]:
    """The modules a `LAZY_COMMANDS = {"name": "module:attribute"}` table imports by name."""
    found = []
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(target, ast.Name) and target.id == "LAZY_COMMANDS" for target in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            for value in node.value.values:
                assert isinstance(value, ast.Constant) and isinstance(value.value, str), "LAZY_COMMANDS holds strings"
                found.append((value.value.split(":")[0], value.lineno))
    return found


def imports_of(root: Path, path: Path, known: set[str]) -> list[Import]:
    """Every first-party module `path` imports, wherever in the file the import stands."""
    importer = module_name(root, path)
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    kept = [node for node in tree.body if not _is_main_block(node)]
    found: list[tuple[str, int]] = _lazy_commands(tree)
    for node in (inner for statement in kept for inner in ast.walk(statement)):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from cinema import stack` imports the module cinema.stack.
                submodule = f"{base}.{alias.name}"
                found.append((submodule if submodule in known else base, node.lineno))
    first_party = (*PACKAGES, *OUTSIDE)
    return [
        Import(importer, imported, line)
        for imported, line in found
        if imported.split(".")[0] in first_party and imported != importer
    ]


def violations(root: Path) -> list[str]:
    """What breaks the layers in the packages under `root`, one line each."""
    paths = sorted(path for package in PACKAGES for path in (root / package).rglob("*.py"))
    known = {module_name(root, path) for path in paths}
    found = [f"{name} belongs to no layer: add it to LAYERS" for name in sorted(known) if layer_of(name) is None]
    for path in paths:
        for edge in imports_of(root, path, known):
            own, theirs = layer_of(edge.importer), layer_of(edge.imported)
            if own is None:
                continue
            where = f"{path.relative_to(root)}:{edge.line}: {edge.importer} ({own}) imports {edge.imported}"
            if edge.imported not in known or theirs is None:
                found.append(f"{where}, which is no module of the layers")
            elif own == GROUND and theirs != GROUND:
                found.append(f"{where} ({theirs}): the ground imports only the ground")
            elif own not in (GROUND, TOP) and theirs not in (GROUND, own):
                found.append(f"{where} ({theirs}): a stage imports only the ground and itself")
    return found


def test_the_packages_keep_their_layers() -> None:
    assert violations(PROJECT) == []


def test_every_lazy_command_is_a_module_of_the_layers() -> None:
    cli = PROJECT / "cinema" / "cli.py"
    known = {module_name(PROJECT, path) for package in PACKAGES for path in (PROJECT / package).rglob("*.py")}
    lazy = {module for module, _ in _lazy_commands(ast.parse(cli.read_text(encoding="utf-8")))}
    assert {"producer.generate_events", "loader.__main__", "cinema.report.command"} <= lazy
    assert lazy <= known


def readme_map() -> dict[str, str]:
    """The README's "Where things live" table: each module or package it names, and its layer."""
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Where things live", 1)[1].split("\n#", 1)[0]
    named = {}
    for row in (line for line in section.splitlines() if line.startswith("| `")):
        where, layer = row.strip("|").split("|")[:2]
        folder = ""
        for token in re.findall(r"`([^`]+)`", where):
            if "/" in token:
                folder = token.rstrip("/").removesuffix(".py").replace("/", ".")
                name = folder
            else:
                name = f"{folder}.{token}"
            named[name] = layer.split(":")[0].strip()
    return named


def test_the_readme_map_names_every_layer_as_the_test_does() -> None:
    named = readme_map()
    known = {
        *PACKAGES,
        *(module_name(PROJECT, path) for package in PACKAGES for path in (PROJECT / package).rglob("*.py")),
    }
    in_packages = {name: layer for name, layer in named.items() if name in known}
    # dbt_project/ is the dbt stage's SQL: no Python module.
    assert set(named) - set(in_packages) == {"dbt_project"}
    assert {name for name, _ in LAYERS} <= set(in_packages)
    for name, layer in in_packages.items():
        ours = layer_of(name)
        assert layer == (ours if ours in (GROUND, TOP) else "stage"), name


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_a_ground_module_reaching_up_inside_a_function_is_caught(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "cinema/__init__.py": "",
            "cinema/names.py": "def rows():\n    from loader.raw import progress\n    return progress\n",
            "loader/__init__.py": "",
            "loader/raw.py": "progress = 1\n",
        },
    )
    assert violations(root) == [
        "cinema/names.py:2: cinema.names (ground) imports loader.raw (loader): the ground imports only the ground"
    ]


def test_a_stage_importing_another_stage_or_the_cli_is_caught(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "cinema/__init__.py": "",
            "cinema/cli.py": "",
            "cinema/stack.py": "import loader.raw\n",
            "loader/__init__.py": "",
            "loader/raw.py": "from cinema import cli\n",
        },
    )
    stage_rule = "a stage imports only the ground and itself"
    assert violations(root) == [
        f"cinema/stack.py:1: cinema.stack (engines) imports loader.raw (loader): {stage_rule}",
        f"loader/raw.py:1: loader.raw (loader) imports cinema.cli (top): {stage_rule}",
    ]


def test_a_lazy_command_and_a_module_without_a_layer_are_caught(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "cinema/__init__.py": "",
            "cinema/cli.py": 'LAZY_COMMANDS = {\n    "load": "loader.gone:load",\n}\n',
            "cinema/helpers.py": "",
            "cinema/db.py": "from tests.conftest import x\n",
            "loader/__init__.py": "",
        },
    )
    assert violations(root) == [
        "cinema.helpers belongs to no layer: add it to LAYERS",
        "cinema/cli.py:2: cinema.cli (top) imports loader.gone, which is no module of the layers",
        "cinema/db.py:1: cinema.db (ground) imports tests.conftest, which is no module of the layers",
    ]


def test_the_top_may_import_any_layer_and_a_script_block_is_its_own_top(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "cinema/__init__.py": "",
            "cinema/cli.py": 'LAZY_COMMANDS = {"load": "loader.raw:load"}\nfrom cinema import stack\n',
            "cinema/stack.py": "",
            "loader/__init__.py": "",
            "loader/raw.py": 'import cinema.db\nif __name__ == "__main__":\n    from cinema.cli import main\n',
            "cinema/db.py": "",
        },
    )
    assert violations(root) == []
