"""`airflow standalone` with every listener on loopback (`cinema airflow` runs this).

Standalone starts the scheduler and the triggerer, and each serves task logs over
HTTP on all interfaces: Airflow 3.3's `serve_logs` binds host "" and no setting
changes that. Standalone keeps every component on one disk, and the API server
reads task logs from there, so the two log servers are skipped (`--skip-serve-logs`);
the API server listens on AIRFLOW__API__HOST (127.0.0.1).
"""

from __future__ import annotations

from airflow.cli.commands import standalone_command

SERVE_LOGS = ("scheduler", "triggerer")


class _LoopbackSubCommand(standalone_command.SubCommand):
    def __init__(self, parent: object, name: str, command: list[str], env: dict[str, str]) -> None:
        if command[0] in SERVE_LOGS:
            command = [*command, "--skip-serve-logs"]
        super().__init__(parent, name, command, env)


def main() -> None:
    standalone_command.SubCommand = _LoopbackSubCommand  # type: ignore[misc]
    standalone_command.StandaloneCommand().run()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
