"""Market data: the candle store, reads from exchanges, and the registry of watched markets."""
