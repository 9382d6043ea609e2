"""Metabase for the Docker Compose stack: opens on a ready dashboard, no /setup clicks.

Written against **Metabase 58 LTS**, the open-source image `metabase/metabase:v0.58.32.2`
pinned in docker-compose.yaml (its ClickHouse driver is built in since Metabase 54:
engine `"clickhouse"`). `tests/unit/test_metabase_provision.py` replays the REST
requests and responses of that version as a recorded contract; when upgrading
Metabase, check those exchanges against the new version's API docs first.

`cinema metabase provision` (the one-shot `metabase-init` service in Compose):

1. `GET /api/health` until `{"status": "ok"}`.
2. `GET /api/session/properties`; no user yet: `POST /api/setup` with its
   `setup-token` creates the admin (METABASE_ADMIN_EMAIL / METABASE_ADMIN_PASSWORD)
   and returns a session; otherwise (or on 403: another run won) `POST /api/session`.
3. `GET /api/database`; the ClickHouse connection is missing: `POST /api/database`
   (database cinema_marts, the read-only CLICKHOUSE_METABASE_USER), then
   `POST /api/database/:id/sync_schema`.
4. `GET /api/card`; each missing card: `POST /api/card` (native SQL on the marts).
5. `GET /api/collection/root/items?models=dashboard`; missing: `POST /api/dashboard`.
   A dashboard without cards gets them with `PUT /api/dashboard/:id` (`dashcards`
   with negative ids, which Metabase reads as "create").
6. The custom homepage does not point at the dashboard yet: `PUT /api/setting`.

Every step looks before it writes, so a rerun only reads (and logs in). Objects are
found by name: rename one in Metabase and the next run creates it again. What
people change on the dashboard afterwards is left alone.

The cards and the dashboard are data: `metabase/dashboard.json`.
"""
