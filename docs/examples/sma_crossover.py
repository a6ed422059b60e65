"""SMA crossover: long on a fast-over-slow cross, out when it crosses back."""

LOOKBACK = 60


def generate_signal(candles, settings):
    close = candles["close"]
    fast = close.rolling(int(settings.get("fast", 9))).mean()
    slow = close.rolling(int(settings.get("slow", 21))).mean()
    if len(close) < 2 or slow.isna().iloc[-2]:
        return None
    price = float(close.iloc[-1])
    crossed_up = fast.iloc[-2] <= slow.iloc[-2] and fast.iloc[-1] > slow.iloc[-1]
    crossed_down = fast.iloc[-2] >= slow.iloc[-2] and fast.iloc[-1] < slow.iloc[-1]
    if crossed_up:
        stop = price * (1 - settings.get("stop_pct", 0.01))
        target = price * (1 + settings.get("target_pct", 0.02))
        print(f"cross up at {price}")
        return {
            "signal": "LONG",
            "price": price,
            "stopLoss": stop,
            "takeProfit": target,
            "metadata": {"fast": float(fast.iloc[-1]), "slow": float(slow.iloc[-1])},
        }
    if crossed_down:
        return {"signal": "EXIT_LONG", "price": price, "metadata": {}}
    return None
