"""Create or complete `.env` from `.env_template`, generating every empty secret.

Standard library only, so `python3 -m cinema.envfile` works before anything is
installed (the Docker quick start needs nothing but this file and Docker).
An existing `.env` keeps its values; keys the template gained since are appended.
"""

from __future__ import annotations

import re
import secrets
import sys
from pathlib import Path

SECRET_KEY = re.compile(r"^[A-Z0-9_]+_(PASSWORD|SECRET|KEY)$")
ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


def new_secret() -> str:
    """A URL-safe token (it survives connection strings, YAML and shells unquoted) that
    also meets the usual password rules: Metabase, for one, insists on a digit."""
    while True:
        token = secrets.token_urlsafe(24)
        if any(c.isdigit() for c in token) and any(c.islower() for c in token) and any(c.isupper() for c in token):
            return token


def _render(line: str) -> str:
    match = ASSIGNMENT.match(line)
    if match and not match.group(2) and SECRET_KEY.match(match.group(1)):
        return f"{match.group(1)}={new_secret()}"
    return line


def _keys(lines: list[str]) -> set[str]:
    return {m.group(1) for m in map(ASSIGNMENT.match, lines) if m}


def write_env(template: Path, target: Path) -> list[str]:
    """Write or extend `target`; return the keys it added."""
    template_lines = template.read_text().splitlines()
    if not target.exists():
        target.write_text("\n".join(_render(line) for line in template_lines) + "\n")
        target.chmod(0o600)
        return sorted(_keys(template_lines))
    existing = target.read_text().splitlines()
    missing = _keys(template_lines) - _keys(existing)
    if missing:
        added = [_render(line) for line in template_lines if (m := ASSIGNMENT.match(line)) and m[1] in missing]
        target.write_text("\n".join([*existing, "", "# added from .env_template", *added]) + "\n")
    return sorted(missing)


def main() -> int:
    root = Path.cwd()
    added = write_env(root / ".env_template", root / ".env")
    print(f".env: {len(added)} setting(s) added" if added else ".env: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
