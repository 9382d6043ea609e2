"""cinema-analytics: viewing events from PostgreSQL to ClickHouse marts."""
