"""The kernel every app builds on: time and resolutions, the market clock, the event bus, the
Redis client, locks, the retry policy and the shared API/admin plumbing. It imports no app."""
