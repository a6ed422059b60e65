"""A local Binance-spot-like exchange for tests, benchmarks and development.

The unmodified ccxt client talks to it over HTTP once its API URLs point here (see
``settings.EXCHANGE_URL_OVERRIDES``). Requests are HMAC-signed and checked like Binance does;
market orders fill at the current candle's close from the platform's candle store; limit orders
fill when a later candle crosses them; faults (5xx, 429/418, a timeout after the order was
accepted) are injected at configurable rates or deterministically through the admin API.
"""
