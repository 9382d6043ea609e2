"""How the loader cuts its batches: whole subscriber transactions, at most batch_max_rows rows."""

from __future__ import annotations

from loader.source import EventWindow, Transaction, cut_window, split_window


def ledger(*rows: int, first_xid: int = 100) -> list[Transaction]:
    """Transactions with consecutive xids and the given row counts; each id sum is the xid times rows."""
    return [Transaction(first_xid + offset, count, (first_xid + offset) * count) for offset, count in enumerate(rows)]


def test_a_backlog_smaller_than_a_batch_is_taken_whole_up_to_the_scanned_end():
    assert cut_window(ledger(10, 20, 30), scanned_to=150, max_rows=100) == EventWindow(
        150, 60, 100 * 10 + 101 * 20 + 102 * 30
    )


def test_the_window_ends_where_the_transaction_that_would_overflow_begins():
    assert cut_window(ledger(40, 40, 40), scanned_to=150, max_rows=100) == EventWindow(102, 80, 100 * 40 + 101 * 40)


def test_a_window_exactly_full_takes_the_last_transaction_too():
    assert cut_window(ledger(50, 50, 1), scanned_to=150, max_rows=100).hi == 102


def test_a_transaction_larger_than_a_batch_is_never_split():
    window = cut_window(ledger(250, 10), scanned_to=150, max_rows=100)
    assert window == EventWindow(101, 250, 100 * 250)


def test_an_empty_ledger_reaches_the_scanned_end_with_no_rows():
    assert cut_window([], scanned_to=150, max_rows=100) == EventWindow(150, 0, 0)


def test_gaps_between_transactions_are_covered_without_rows():
    transactions = [Transaction(100, 5, 500), Transaction(140, 5, 700)]
    assert cut_window(transactions, scanned_to=200, max_rows=7) == EventWindow(140, 5, 500)


def test_a_large_window_is_split_for_concurrent_pulls_at_transaction_boundaries():
    transactions = ledger(10, 10, 10, 10)
    assert split_window(transactions, 100, 104, 2) == [(100, 102), (102, 104)]
    assert split_window(transactions, 100, 104, 3) == [(100, 102), (102, 103), (103, 104)]
    assert split_window(transactions, 100, 104, 1) == [(100, 104)]


def test_split_ranges_cover_the_window_exactly_even_with_gaps_or_one_huge_transaction():
    assert split_window(ledger(10, 10, 10, 10), 90, 110, 4) == [(90, 101), (101, 102), (102, 103), (103, 110)]
    assert split_window(ledger(1000, 1), 100, 102, 2) == [(100, 101), (101, 102)]
    assert split_window(ledger(1000), 100, 101, 2) == [(100, 101)]
    assert split_window([], 100, 104, 2) == [(100, 104)]
