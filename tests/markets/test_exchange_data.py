"""What is kept of an exchange's error: its words, never the request's signature or key."""

from __future__ import annotations

import ccxt
import pytest

from markets.exchange_data import exchange_error_text

SIGNED_URL = (
    "https://api.binance.com/api/v3/order?symbol=ETHBTC&origClientOrderId=sf-1"
    "&timestamp=1700000000000&apiKey=AKEY123&signature=0f1e2d3c4b5a"
)


@pytest.mark.parametrize(
    "exc",
    [
        ccxt.RequestTimeout(f"binance GET {SIGNED_URL}"),
        ccxt.ExchangeNotAvailable(f"binance GET {SIGNED_URL} 503 Service Unavailable <html>"),
        ccxt.AuthenticationError(f'binance GET {SIGNED_URL} 401 {{"code":-2015}}'),
    ],
)
def test_an_exchange_error_keeps_its_words_but_not_the_query_of_a_signed_url(exc):
    # given a ccxt error whose message carries the signed request's URL
    # when it is put into words
    text = exchange_error_text(exc)

    # then the query (signature, key) is gone, the rest is kept
    assert "signature" not in text and "AKEY123" not in text and "0f1e2d3c4b5a" not in text
    assert text.startswith(
        f"{type(exc).__name__}: binance GET https://api.binance.com/api/v3/order?"
    )
    assert text.endswith(str(exc).split(SIGNED_URL, 1)[1])


def test_an_exchange_error_is_cut_to_the_limit():
    # given a long error; when it is put into words with a limit; then it keeps to it
    assert len(exchange_error_text(ccxt.ExchangeError("x" * 5000), limit=500)) == 500
