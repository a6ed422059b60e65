"""Tooling apart from the platform: the exchange simulator, the demos, the benchmarks and the
process supervision they share. It may import every app; no app imports it."""
