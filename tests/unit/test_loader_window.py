"""How the loader cuts its batches: whole subscriber transactions, at most batch_max_rows rows."""

from __future__ import annotations

from loader.source import EventWindow, FlushGate, IdFigures, Snapshot, Transaction, cut_window, split_window


def transaction(xid: int, count: int) -> Transaction:
    """A transaction of `count` events whose ids are xid * 1000 + 0, 1, ..."""
    ids = range(xid * 1000, xid * 1000 + count)
    return Transaction(xid, IdFigures.of(ids), ids[0], ids[-1])


def ledger(*rows: int, first_xid: int = 100) -> list[Transaction]:
    """Transactions with consecutive xids and the given row counts."""
    return [transaction(first_xid + offset, count) for offset, count in enumerate(rows)]


def window(hi: int, *transactions: Transaction) -> EventWindow:
    figures = IdFigures()
    for each in transactions:
        figures += each.figures
    return EventWindow(
        hi,
        figures,
        min(each.min_id for each in transactions),
        max(each.max_id for each in transactions),
        transactions[-1].xid,
    )


def test_a_backlog_smaller_than_a_batch_is_taken_whole_up_to_the_scanned_end():
    assert cut_window(ledger(10, 20, 30), scanned_to=150, max_rows=100) == window(150, *ledger(10, 20, 30))


def test_the_window_ends_where_the_transaction_that_would_overflow_begins():
    assert cut_window(ledger(40, 40, 40), scanned_to=150, max_rows=100) == window(102, *ledger(40, 40))


def test_a_window_exactly_full_takes_the_last_transaction_too():
    assert cut_window(ledger(50, 50, 1), scanned_to=150, max_rows=100).hi == 102


def test_a_transaction_larger_than_a_batch_is_never_split():
    assert cut_window(ledger(250, 10), scanned_to=150, max_rows=100) == window(101, *ledger(250))


def test_an_empty_ledger_reaches_the_scanned_end_with_no_rows():
    assert cut_window([], scanned_to=150, max_rows=100) == EventWindow(150)


def test_gaps_between_transactions_are_covered_without_rows():
    transactions = [transaction(100, 5), transaction(140, 5)]
    assert cut_window(transactions, scanned_to=200, max_rows=7) == window(140, transactions[0])


def test_a_re_load_never_reaches_past_its_end():
    assert cut_window(ledger(10, 10, 10), scanned_to=150, max_rows=100, cap=102) == window(102, *ledger(10, 10))
    assert cut_window(ledger(10), scanned_to=150, max_rows=100, cap=120) == window(120, *ledger(10))


def test_the_check_figures_tell_a_duplicated_and_a_missing_id_from_the_right_ones():
    right = IdFigures.of([1, 2, 3, 4])
    # 2 twice and 3 missing: same count; 1 + 2 + 2 + 5 balances the sum, not the sum of squares.
    assert IdFigures.of([1, 2, 2, 4]).rows == right.rows
    assert IdFigures.of([1, 2, 2, 5]).id_sum == right.id_sum
    assert IdFigures.of([1, 2, 2, 5]) != right
    assert IdFigures.of([1, 2, 2, 5]).distinct == 3
    # A swap that keeps the count, the distinct count and the sum: only the squares differ.
    assert IdFigures.of([1, 4, 5, 10]).id_sum == IdFigures.of([2, 3, 6, 9]).id_sum
    assert IdFigures.of([1, 4, 5, 10]) != IdFigures.of([2, 3, 6, 9])


def test_the_check_figures_do_not_wrap_near_2_to_the_63():
    top = 2**63 - 1
    figures = IdFigures.of([top, top - 1])
    assert figures.id_sum == 2 * top - 1 > 2**63
    assert figures.id_square_sum == top**2 + (top - 1) ** 2


def test_the_flush_gate_cuts_only_at_an_xmin_whose_wal_is_flushed():
    gate = FlushGate()
    assert gate.offer(Snapshot(xmin=10, xmax=12, taken_at=1.0, insert_lsn=500, flush_lsn=400)) == 0
    assert gate.offer(Snapshot(xmin=15, xmax=16, taken_at=2.0, insert_lsn=700, flush_lsn=600)) == 10
    assert gate.taken_at == 1.0
    assert gate.offer(Snapshot(xmin=15, xmax=16, taken_at=3.0, insert_lsn=700, flush_lsn=700)) == 15
    assert gate.taken_at == 2.0
    gate.reset(3)
    assert gate.offer(Snapshot(xmin=20, xmax=20, taken_at=4.0, insert_lsn=800, flush_lsn=800)) == 20


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
