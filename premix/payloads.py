"""A job's payload: the one `PremixFundsJob` an arq job carries, and how a payload that is not
one (written to Redis by hand, or for another user) ends its job at once, touching nothing."""

import re
from decimal import Decimal
from typing import Any, Final

from pydantic import ValidationError

from premix.jobs import USER_ID_PATTERN, PremixFundsJob, describe_validation_error
from premix.logs import get_logger
from premix.notify import Notifier
from premix.progress import Phase, ProgressEmitter, ProgressStatus
from premix.results import build_result
from premix.user_lock import release_user_lock_quietly

log = get_logger(__name__)

REFUSAL_MESSAGE_LIMIT: Final = 500  # characters of the message refusing a hand-written payload
_JOB_ID = re.compile(r"^premix-(?P<user_id>.+)-\d+$")
_CHAT_ID_RANGE: Final = range(-(2**63), 2**63)


def job_of(
    job_id: str, args: tuple[object, ...], kwargs: dict[str, object]
) -> PremixFundsJob | str:
    """The job arq's arguments carry, or the message refusing them ("Invalid parameters: ...")."""
    if len(args) != 1 or kwargs:
        return "Invalid parameters: request: a premix job carries exactly one payload object"
    try:
        job = PremixFundsJob.model_validate(args[0])
    except ValidationError as e:
        return f"Invalid parameters: {describe_validation_error(e)}"
    named_user = _user_id_from_job_id(job_id)
    if named_user is not None and named_user != job.user_id:
        # enqueue_premix_funds names the job after its user: the payload was changed by hand.
        return f"Invalid parameters: userId: {job.user_id} is not the user of job {job_id}"
    return job


async def refuse_payload(
    ctx: dict[str, Any], job_id: str, payload: object, message: str
) -> dict[str, Any]:
    """End a job whose payload is not a valid premix job (written to Redis by hand): nothing
    is retried and the ledger is not touched; the failed event goes out under the job id, the
    user lock is released and the chat told, as far as the payload or job id name them."""
    if len(message) > REFUSAL_MESSAGE_LIMIT:  # a payload with thousands of bad fields
        message = message[: REFUSAL_MESSAGE_LIMIT - 1] + "…"
    fields = payload if isinstance(payload, dict) else {}
    user_ids = [
        user_id
        for user_id in (_user_id_or_none(fields.get("userId")), _user_id_from_job_id(job_id))
        if user_id is not None
    ]
    chat_id = _chat_id_or_none(fields.get("userChatId"))
    log.warning("job_payload_invalid", job_id=job_id, reason=message)
    # Stands in for the job the payload should have been (fields known to be valid, or blank).
    stand_in = PremixFundsJob.model_construct(
        user_id=user_ids[0] if user_ids else "",
        user_chat_id=chat_id if chat_id is not None else 0,
        mix_amount=Decimal(0),
        max_wallets=None,
        mode="standard",
        socket_user_id=None,
    )
    emitter = ProgressEmitter(ctx["redis"], ctx["settings"], job_id, stand_in)
    await emitter.phase(Phase.VALIDATING_PARAMETERS, ProgressStatus.FAILED, message)
    for user_id in dict.fromkeys(user_ids):
        await release_user_lock_quietly(ctx["redis"], user_id, job_id)
    if chat_id is not None:
        notifier: Notifier = ctx["notifier"]
        await notifier.notify_failed(chat_id, job_id=job_id, reason=message)
    return build_result(job_id, message, success=False)


def _user_id_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and re.fullmatch(USER_ID_PATTERN, value) else None


def _user_id_from_job_id(job_id: str) -> str | None:
    match = _JOB_ID.fullmatch(job_id)
    return _user_id_or_none(match.group("user_id")) if match is not None else None


def _chat_id_or_none(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value in _CHAT_ID_RANGE:
        return value
    return None
