"""The service end to end: a real arq worker, Redis, localnet and the memory store."""
