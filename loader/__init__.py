"""The loader: subscriber rows into ClickHouse, exactly once."""
