"""premix: pre-fund a user's Solana buyer wallets from their funding wallet, as a queued job."""

__version__ = "0.1.0"
