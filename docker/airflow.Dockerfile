# Airflow 3.3 with the project and dbt installed: the airflow-* services of
# docker-compose.yaml. Tasks call the `cinema` console script; dbt runs through
# astronomer-cosmos from the manifest parsed here.
FROM apache/airflow:3.3.2-python3.12

ENV PIP_NO_CACHE_DIR=1 \
    CINEMA_STATE_DIR=/opt/airflow/cinema-state

# Group 0 owns the project and the state folder, as it owns the image's own files:
# Compose runs the containers as AIRFLOW_UID:0, whatever that uid is.
# (uid 50000 is the image's `airflow` user.)
USER 0
RUN install --directory --owner=50000 --group=0 --mode=2775 /opt/cinema /opt/airflow/cinema-state
USER 50000

WORKDIR /opt/cinema
COPY --chown=50000:0 pyproject.toml constraints.txt README.md ./
COPY --chown=50000:0 cinema/ cinema/
COPY --chown=50000:0 producer/ producer/
COPY --chown=50000:0 loader/ loader/
COPY --chown=50000:0 metabase/ metabase/
COPY --chown=50000:0 postgres_init/ postgres_init/
COPY --chown=50000:0 dbt_project/ dbt_project/
COPY --chown=50000:0 dags/ dags/
# The core plus the airflow and dbt extras (no embedded engines: the tasks reach the
# servers). Naming apache-airflow keeps pip from moving the image's own Airflow, and
# `pip check` fails the build if what pip resolved breaks a package the image already
# had (its providers pin their own dependencies). The DAG renders its dbt task group
# from target/manifest.json; parsing connects to nothing, and the `server` target's
# connection values all have defaults.
RUN pip install --constraint constraints.txt --editable ".[airflow,dbt]" "apache-airflow==3.3.2" \
    && pip check \
    && CLICKHOUSE_INTERFACE=http dbt parse --project-dir dbt_project --profiles-dir dbt_project

WORKDIR /opt/airflow
