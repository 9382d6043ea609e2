"""ClickHouse itself on statements, without a server: chdb in a child process.

A child process, because chdb opens one data path per process and the tests around
may hold another.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence

SCRIPT = """\
import json, sys, chdb
connection = chdb.connect(':memory:')
cursor = connection.cursor()
errors = {}
for statement in json.load(sys.stdin):
    try:
        cursor.execute(statement)
        cursor.fetchall()
    except Exception as error:
        errors[statement] = str(error)
print(json.dumps(errors))
"""


def clickhouse_errors(statements: Sequence[str]) -> dict[str, str]:
    """Run each statement in an empty in-memory ClickHouse; return the failing ones with their errors."""
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        input=json.dumps(list(statements)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    errors: dict[str, str] = json.loads(result.stdout.splitlines()[-1])
    return errors


def syntax_errors(statements: Sequence[str]) -> dict[str, str]:
    """The statements ClickHouse's parser rejects (EXPLAIN AST parses, runs nothing)."""
    explained = {f"EXPLAIN AST {statement}": statement for statement in statements}
    return {explained[query]: error for query, error in clickhouse_errors(list(explained)).items()}
