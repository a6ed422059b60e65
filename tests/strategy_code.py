"""Strategy sources used across the tests."""

SMA_CROSSOVER = """
LOOKBACK = 60

def generate_signal(candles, settings):
    fast = candles["close"].rolling(int(settings.get("fast", 5))).mean()
    slow = candles["close"].rolling(int(settings.get("slow", 20))).mean()
    if len(candles) < 2 or slow.isna().iloc[-2]:
        return None
    price = float(candles["close"].iloc[-1])
    if fast.iloc[-2] <= slow.iloc[-2] and fast.iloc[-1] > slow.iloc[-1]:
        return {"signal": "LONG", "price": price, "stopLoss": price * 0.97,
                "takeProfit": None, "metadata": {"fast": float(fast.iloc[-1])}}
    if fast.iloc[-2] >= slow.iloc[-2] and fast.iloc[-1] < slow.iloc[-1]:
        return {"signal": "EXIT_LONG", "price": price, "metadata": {}}
    return None
"""

# Reads settings["signal"] so a test decides what the next execution returns.
SCRIPTED = """
LOOKBACK = 5

def generate_signal(candles, settings):
    price = float(candles["close"].iloc[-1])
    kind = settings.get("signal", "HOLD")
    if kind == "HOLD":
        return None
    stop = settings.get("stop_pct")
    stop_loss = None
    if stop is not None:
        stop_loss = price * (1 - stop) if kind == "LONG" else price * (1 + stop)
    return {"signal": kind, "price": price, "stopLoss": stop_loss, "takeProfit": None,
            "metadata": {"last_ts": str(candles["timestamp"].iloc[-1]), "rows": len(candles)}}
"""
