"""A Compose configuration as a container sees it: variables interpolated from a `.env`
the way `docker compose` does it, and each service's environment resolved
(`env_file`, then `environment`, anchors and merges already applied by the YAML loader).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cinema.envfile import write_env
from cinema.paths import PROJECT_ROOT

# $$ (a literal $), ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, $NAME.
REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}$]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class MissingVariable(ValueError):
    """A `${NAME:?message}` whose variable is unset: Compose refuses to start."""


def generated_dotenv(folder: Path) -> dict[str, str]:
    """The `.env` that `make .env` writes (fresh secrets), as Compose reads it."""
    target = folder / ".env"
    write_env(PROJECT_ROOT / ".env_template", target)
    return read_dotenv(target)


def read_dotenv(path: Path) -> dict[str, str]:
    entries = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            entries[name.strip()] = value
    return entries


def interpolate(text: str, variables: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, argument = match.group(2), match.group(3) or ""
        value = variables.get(name)
        missing = value is None or (value == "" and operator is not None and operator.startswith(":"))
        if operator in (":-", "-") and missing:
            return argument
        if operator in (":?", "?") and missing:
            raise MissingVariable(f"{name}: {argument}")
        return value or ""

    return REFERENCE.sub(replace, text)


def interpolated(node: Any, variables: dict[str, str]) -> Any:
    """Every string of a configuration interpolated, as Compose does before anything else."""
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, dict):
        return {key: interpolated(value, variables) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(item, variables) for item in node]
    return node


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def resolved_environment(service: dict[str, Any], directory: Path = PROJECT_ROOT) -> dict[str, str]:
    """The environment the service's container starts with (an interpolated service)."""
    environment: dict[str, str] = {}
    env_files = service.get("env_file", [])
    for entry in [env_files] if isinstance(env_files, str | dict) else env_files:
        path = entry if isinstance(entry, str) else entry["path"]
        environment.update(read_dotenv(directory / path))
    declared = service.get("environment", {})
    if isinstance(declared, list):
        declared = dict(item.split("=", 1) if "=" in item else (item, None) for item in declared)
    for name, value in declared.items():
        assert value is not None, f"{name}: a bare name takes the host's environment; give it a value"
        environment[name] = _as_text(value)
    return environment


def networks_of(service: dict[str, Any]) -> set[str]:
    networks = service.get("networks", [])
    return set(networks if isinstance(networks, list) else networks.keys())
