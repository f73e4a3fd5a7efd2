"""Names shared by the enqueue side and the workers: Redis keys, job names, units."""

from typing import Final

LAMPORTS_PER_SOL: Final = 1_000_000_000
MAX_BUYER_WALLETS: Final = 73
TOTAL_PHASES: Final = 6
MAX_COMPUTE_UNIT_LIMIT: Final = 1_400_000  # the most compute units a transaction can request

# localnet and the demo
LOCALNET_SLOT_MS: Final = 400  # a validator's slot
DEMO_AMOUNT_SOL: Final = "25"
DEMO_SLOT_MS: Final = 50

# arq
QUEUE_NAME: Final = "premix:queue"
JOB_FUNCTION: Final = "premix_funds"
JOB_TYPE: Final = "premix_funds"

# Redis key prefixes (suffix: user id or job id)
USER_LOCK_PREFIX: Final = "premix:user-lock:"
CANCEL_REQUEST_PREFIX: Final = "premix:cancel:"  # a running job stops at its next safe point
CANCELLED_JOB_PREFIX: Final = "premix:cancelled:"  # the receipt of a job cancelled while queued
# `idempotencyKey` (suffix: user id, ":", SHA-256 of the key; value: job id, " ", fingerprint)
IDEMPOTENCY_PREFIX: Final = "premix:idempotency:"
PROGRESS_CHANNEL_PREFIX: Final = "premix:progress:"
PROGRESS_ALL_CHANNEL: Final = "premix:progress"
PROGRESS_STATE_PREFIX: Final = "premix:progress-state:"
# The RPC budget shared by every worker on the Redis database (`premix.rpc_budget`)
RPC_BUDGET_KEY: Final = "premix:rpc-budget"
RPC_BUDGET_WORKERS_KEY: Final = "premix:rpc-budget:workers"

# Mongo collections
WALLETS_COLLECTION: Final = "wallets"
RUNS_COLLECTION: Final = "premix_runs"
