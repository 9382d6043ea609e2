"""Where the project's non-Python folders are. The package is installed editable
(`pip install -e .`, also in the Docker images), so they sit next to it."""

import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_INIT = PROJECT_ROOT / "postgres_init"
DBT_PROJECT = PROJECT_ROOT / "dbt_project"
DAGS = PROJECT_ROOT / "dags"


def executable(name: str) -> str:
    """A console script of this interpreter's environment (`cinema`, `airflow`), whatever PATH says."""
    return str(Path(sys.executable).with_name(name))
