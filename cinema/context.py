"""The settings of the running `cinema` command, for the commands that live next to their stage.

A ground module, so that a stage's command (`cinema load`, `cinema generate`, ...) reads
its settings without importing the CLI above it.
"""

from __future__ import annotations

import click
from decouple import UndefinedValueError

from cinema.logs import configure_logging
from cinema.settings import Settings, load_settings


def settings_from_context() -> Settings:
    """Load settings once per invocation and configure logging with them."""
    context = click.get_current_context()
    root = context.find_root()
    if root.obj is None:
        try:
            root.obj = load_settings()
        except UndefinedValueError as error:
            raise click.ClickException(
                f"{error} Run `make .env` (creates .env with fresh secrets) or export it."
            ) from error
        except ValueError as error:
            raise click.ClickException(str(error)) from error
        configure_logging(root.obj.log_format)
    settings: Settings = root.obj
    return settings
