"""Transfer engines: execute a distribution plan as System Program transfers from the funding
wallet straight to each buyer wallet, with a write-ahead ledger so nothing is paid twice.

`Payout` is the one face (`payout.py`); `standard` and `fast` are the two modes (SPEC section 5),
`engine` what they share, `packing` how transfers fit into transactions, `fees` the priority
fee each attempt carries, `result` the report.
Everything but the names below is private to this package.
"""

from premix.mixer.engine import ProgressCallback, StopCheck
from premix.mixer.fees import PriorityFees
from premix.mixer.packing import FeePolicy
from premix.mixer.payout import (
    MODES,
    BalanceNeed,
    Payout,
    balance_needed,
    check_recipient_accounts,
    check_recipients,
)
from premix.mixer.result import MixerFailed, MixerProgress, MixResult, WalletOutcome, WalletStatus

__all__ = [
    "MODES",
    "BalanceNeed",
    "FeePolicy",
    "MixResult",
    "MixerFailed",
    "MixerProgress",
    "Payout",
    "PriorityFees",
    "ProgressCallback",
    "StopCheck",
    "WalletOutcome",
    "WalletStatus",
    "balance_needed",
    "check_recipient_accounts",
    "check_recipients",
]
