"""Where the project's non-Python folders are. The package is installed editable
(`pip install -e .`, also in the Docker images), so they sit next to it."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_INIT = PROJECT_ROOT / "postgres_init"
DBT_PROJECT = PROJECT_ROOT / "dbt_project"
DAGS = PROJECT_ROOT / "dags"
