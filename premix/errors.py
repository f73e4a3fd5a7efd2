"""The failures a user can see, one class each, with the sentence they are shown.

`title` is the exact headline of SPEC section 3; `str(error)` is the title plus the numbers that
explain it. `permanent` failures end the job; transient ones are retried by the queue. The
transfer engine's own failure, `MixerFailed`, lives with its report in `premix.mixer.result`.
"""

from premix.amounts import format_sol


class Cancelled(Exception):
    """`cancel_premix` asked a running job to stop and it reached a safe point: nothing it
    signed can still land unaccounted. Not a `PremixError`: the job ends cancelled, not
    failed."""


class PremixError(Exception):
    """Base of every failure reported to the user. The message never holds secret material."""

    title = "Premix failed"
    permanent = True

    def __init__(self, detail: str = "") -> None:
        self.detail = detail
        super().__init__(f"{self.title}: {detail}" if detail else self.title)

    @property
    def user_message(self) -> str:
        """The one-paragraph message shown to the user (Telegram, result, progress event)."""
        return str(self)


MISCONFIGURED_USER_MESSAGE = "premix is misconfigured; nothing was sent"


class OperatorError(PremixError):
    """A failure of premix's own configuration (its keys, its store): the detail (key ids,
    variable names) is for the operator's log only; the user is told `user_message`."""

    @property
    def user_message(self) -> str:
        return f"{self.title}: {MISCONFIGURED_USER_MESSAGE}"


class FundingWalletNotFound(PremixError):
    title = "Funding wallet not found"

    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id} has no funding wallet; create a funding wallet first")


class NoBuyerWallets(PremixError):
    title = "No buyer wallets found"

    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id} has no buyer wallets; create buyer wallets first")


class InsufficientBalance(PremixError):
    title = "Insufficient funding wallet balance"

    def __init__(
        self, *, needed_lamports: int, available_lamports: int, breakdown: str = ""
    ) -> None:
        self.needed_lamports = needed_lamports
        self.available_lamports = available_lamports
        detail = f"needed {format_sol(needed_lamports)}, available {format_sol(available_lamports)}"
        if breakdown:
            detail += f" ({breakdown})"
        super().__init__(detail)


class InvalidParameters(PremixError):
    title = "Invalid parameters"


class TransientError(PremixError):
    """RPC, Redis or store unreachable or timing out: the queue retries the job with backoff."""

    title = "Temporary failure"
    permanent = False
