"""When a streamed candle counts as closed (pure logic, no I/O)."""

from __future__ import annotations

from execution.streaming.closer import CandleCloser

STEP = 300_000


def _row(open_ms: int, close: float = 1.0) -> list:
    return [open_ms, 1.0, 1.0, 1.0, close, 1.0]


def test_a_candle_closes_when_a_later_one_opens():
    # given a closer that has seen an open candle
    closer = CandleCloser(STEP)
    assert closer.feed([_row(0)]) == []

    # when the next candle opens
    closed = closer.feed([_row(0, 2.0), _row(STEP)])

    # then the first is closed, confirmed, with its latest values, and the second is open
    assert [(c.row, c.confirmed) for c in closed] == [(_row(0, 2.0), True)]
    assert closer.current == _row(STEP)


def test_a_final_flag_closes_the_candle_without_waiting_for_the_next():
    # given an open candle the exchange marks final
    closer = CandleCloser(STEP)
    closer.mark_final(0)

    # when its last update arrives
    closed = closer.feed([_row(0, 3.0)])

    # then it is closed at once
    assert [c.row for c in closed] == [_row(0, 3.0)]


def test_each_candle_closes_once_even_when_the_cache_repeats_it():
    # given a candle already handed over as closed
    closer = CandleCloser(STEP)
    closer.feed([_row(0), _row(STEP)])

    # when ccxt's cache returns it again with newer rows
    closed = closer.feed([_row(0), _row(STEP), _row(2 * STEP)])

    # then only the newly closed candle is handed over
    assert [c.row[0] for c in closed] == [STEP]


def test_the_candle_open_across_a_disconnect_needs_confirmation():
    # given a candle that was open when the connection dropped
    closer = CandleCloser(STEP, last_closed_ms=-STEP)
    closer.feed([_row(0)])
    closer.disconnected()

    # when the stream resumes with the next candle
    closed = closer.feed([_row(0), _row(STEP)])

    # then the old candle is closed but unconfirmed: its values may be partial
    assert [(c.row[0], c.confirmed) for c in closed] == [(0, False)]


def test_a_gap_is_reported_for_candles_never_seen():
    # given the last close at 0
    closer = CandleCloser(STEP, last_closed_ms=0)

    # then a stream resuming two candles later has a gap, one resuming at the next does not
    assert closer.has_gap([_row(3 * STEP)])
    assert not closer.has_gap([_row(STEP)])
