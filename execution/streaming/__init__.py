"""Event-driven candle closes: watch exchanges' candle streams and run each close once."""
