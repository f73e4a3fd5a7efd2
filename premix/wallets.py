"""`WalletStore`: each user's funding wallet and ordered buyer wallets, private keys encrypted
(`premix.keys`), in the store's `wallets` collection."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from bson import ObjectId
from pymongo.errors import BulkWriteError, DuplicateKeyError
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from premix.constants import MAX_BUYER_WALLETS
from premix.documents import Document, DocumentCollection
from premix.errors import PremixError
from premix.keys import ENVELOPE_VERSION, Envelope, KeyConfigError, KeyDecryptionError, KeyRing


class WalletConflict(PremixError):
    """A wallet to store is already stored, or the user's wallets changed concurrently."""

    title = "Wallet already stored"


class TooManyBuyerWallets(PremixError):
    title = "Too many buyer wallets"

    def __init__(self, user_id: str, *, existing: int, adding: int) -> None:
        super().__init__(
            f"user {user_id} has {existing} buyer wallet(s); adding {adding} would exceed the "
            f"maximum of {MAX_BUYER_WALLETS}. Nothing was added"
        )


FUNDING: Final = "funding"
BUYER: Final = "buyer"
ENCRYPTED_KEY_FIELD: Final = "encrypted_secret_key"
_PUBLIC_KEY_ONLY: Final = {"_id": 0, "public_key": 1}
_ROLE_ONLY: Final = {"_id": 0, "role": 1}
_ROLE_AND_OWNER: Final = {"_id": 0, "role": 1, "user_id": 1}


@dataclass(frozen=True, slots=True)
class WalletCounts:
    """What a user has stored, without a key: a funding wallet or not, and how many buyers."""

    has_funding: bool
    buyer_count: int


def checked_user_id(user_id: object) -> str:
    """`user_id` if it is a non-empty str; ids reach MongoDB only as strings (no operators)."""
    if not isinstance(user_id, str):
        raise TypeError("user_id must be a str")
    if not user_id:
        raise ValueError("user_id must not be empty")
    return user_id


def _checked_limit(limit: int | None) -> int:
    if limit is None:
        return 0
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError("limit must be a positive int or None")
    return limit


class WalletStore:
    """Per user: one funding wallet and up to 73 buyer wallets in a fixed order (positions 0..72).

    Each wallet is one document: `user_id`, `role` ("funding" | "buyer"), `position`,
    `public_key` (base58, in clear), `encrypted_secret_key` (a `premix.keys` envelope),
    `created_at`, `updated_at`. Unique indexes: (user_id, role, position) and public_key.
    """

    def __init__(self, collection: DocumentCollection, key_ring: KeyRing | None) -> None:
        self.collection = collection
        self._key_ring = key_ring

    @property
    def key_ring(self) -> KeyRing:
        """The key ring; raises `KeyConfigError` when no encryption keys are configured."""
        if self._key_ring is None:
            raise KeyConfigError(
                "PREMIX_ENCRYPTION_KEYS is not set; the wallet store needs at least one key"
            )
        return self._key_ring

    async def ensure_indexes(self) -> None:
        """Create the unique indexes (idempotent)."""
        await self.collection.create_index(
            [("user_id", 1), ("role", 1), ("position", 1)],
            unique=True,
            name="user_role_position_unique",
        )
        await self.collection.create_index(
            [("public_key", 1)], unique=True, name="public_key_unique"
        )

    async def set_funding_wallet(self, user_id: str, keypair: Keypair) -> None:
        """Store `keypair` as the user's funding wallet, replacing any previous one.

        Raises `WalletConflict` when its public key is already stored as another wallet.
        """
        user_id = checked_user_id(user_id)
        slot = {"user_id": user_id, "role": FUNDING, "position": 0}
        document = self._document(user_id, FUNDING, 0, keypair)
        public_key = document["public_key"]
        holder = await self.collection.find_one({"public_key": public_key})
        if holder is not None and any(holder.get(field) != slot[field] for field in slot):
            raise self._already_stored(user_id, public_key, holder)
        document.pop("_id")
        try:
            await self.collection.replace_one(slot, document, upsert=True)
        except DuplicateKeyError:
            raise WalletConflict(
                f"the funding wallet of user {user_id} changed concurrently; retry"
            ) from None

    async def add_buyer_wallets(self, user_id: str, keypairs: Iterable[Keypair]) -> list[int]:
        """Append `keypairs` as buyer wallets after the user's existing ones, in order.

        Returns their positions. Writes nothing and raises `TooManyBuyerWallets` past 73,
        `WalletConflict` when a public key is repeated or already stored.
        """
        user_id = checked_user_id(user_id)
        keypairs = list(keypairs)
        if not keypairs:
            return []
        public_keys = [str(keypair.pubkey()) for keypair in keypairs]
        repeated = next((key for key in public_keys if public_keys.count(key) > 1), None)
        if repeated is not None:
            raise WalletConflict(f"public key {repeated} is given twice; nothing was added")
        existing = await self.buyer_wallet_count(user_id)
        if existing + len(keypairs) > MAX_BUYER_WALLETS:
            raise TooManyBuyerWallets(user_id, existing=existing, adding=len(keypairs))
        holder = await self.collection.find_one({"public_key": {"$in": public_keys}})
        if holder is not None:
            raise self._already_stored(user_id, str(holder["public_key"]), holder)
        positions = list(range(existing, existing + len(keypairs)))
        documents = [
            self._document(user_id, BUYER, position, keypair)
            for position, keypair in zip(positions, keypairs, strict=True)
        ]
        try:
            await self.collection.insert_many(documents, ordered=True)
        except (BulkWriteError, DuplicateKeyError):
            # Another writer took a position or key meanwhile: undo our part, keep it all-or-none.
            await self.collection.delete_many({"_id": {"$in": [doc["_id"] for doc in documents]}})
            raise WalletConflict(
                f"the buyer wallets of user {user_id} changed concurrently; "
                "nothing was added, retry"
            ) from None
        return positions

    async def funding_wallet(self, user_id: str) -> Keypair | None:
        """The user's funding keypair, or None. Raises `KeyDecryptionError`."""
        user_id = checked_user_id(user_id)
        document = await self.collection.find_one({"user_id": user_id, "role": FUNDING})
        return None if document is None else self._keypair(document)

    async def buyer_wallets(self, user_id: str, limit: int | None = None) -> list[Keypair]:
        """The user's buyer keypairs in position order (the first `limit` when given).

        Raises `KeyDecryptionError` naming the wallet that cannot be decrypted.
        """
        documents = await self._buyer_documents(user_id, limit, projection=None)
        return [self._keypair(document) for document in documents]

    async def funding_public_key(self, user_id: str) -> Pubkey | None:
        """The user's funding wallet public key, or None. Decrypts nothing."""
        user_id = checked_user_id(user_id)
        document = await self.collection.find_one(
            {"user_id": user_id, "role": FUNDING}, _PUBLIC_KEY_ONLY
        )
        return None if document is None else Pubkey.from_string(document["public_key"])

    async def buyer_public_keys(self, user_id: str, limit: int | None = None) -> list[Pubkey]:
        """The user's buyer wallet public keys in position order. Decrypts nothing."""
        documents = await self._buyer_documents(user_id, limit, projection=_PUBLIC_KEY_ONLY)
        return [Pubkey.from_string(document["public_key"]) for document in documents]

    async def buyer_positions(self, user_id: str) -> list[tuple[int, Pubkey]]:
        """The user's buyer wallets as (stored position, public key), in position order.
        Decrypts nothing."""
        documents = await self._buyer_documents(
            user_id, None, projection={"_id": 0, "public_key": 1, "position": 1}
        )
        return [(int(d["position"]), Pubkey.from_string(d["public_key"])) for d in documents]

    async def buyer_wallet_count(self, user_id: str) -> int:
        """How many buyer wallets the user has."""
        user_id = checked_user_id(user_id)
        return await self.collection.count_documents({"user_id": user_id, "role": BUYER})

    async def wallet_counts(self, user_id: str) -> WalletCounts:
        """Whether the user has a funding wallet and how many buyer wallets, in one query that
        reads only each wallet's role (no key material; at most 74 small documents, one batch).
        """
        user_id = checked_user_id(user_id)
        cursor = self.collection.find({"user_id": user_id}, _ROLE_ONLY)
        roles = [document.get("role") for document in await cursor.to_list()]
        return WalletCounts(has_funding=FUNDING in roles, buyer_count=roles.count(BUYER))

    async def wallet_counts_of(self, user_ids: Sequence[str]) -> dict[str, WalletCounts]:
        """`wallet_counts` of several users in one query (roles and owners only); a user with
        no wallet counts as none of either."""
        ids = sorted({checked_user_id(user_id) for user_id in user_ids})
        query = {"user_id": ids[0]} if len(ids) == 1 else {"user_id": {"$in": ids}}
        cursor = self.collection.find(query, _ROLE_AND_OWNER)
        roles: dict[str, list[object]] = {user_id: [] for user_id in ids}
        for document in await cursor.to_list():
            roles.setdefault(str(document.get("user_id")), []).append(document.get("role"))
        return {
            user_id: WalletCounts(has_funding=FUNDING in found, buyer_count=found.count(BUYER))
            for user_id, found in roles.items()
        }

    async def delete_user(self, user_id: str) -> int:
        """Delete every wallet of the user; returns how many were deleted."""
        user_id = checked_user_id(user_id)
        result = await self.collection.delete_many({"user_id": user_id})
        return result.deleted_count

    async def reencrypt_all(self) -> int:
        """Re-encrypt every key not under the newest configured key; returns how many.

        Safe to re-run. Raises `KeyDecryptionError` naming the first wallet that cannot be
        decrypted (those before it stay re-encrypted).
        """
        key_ring = self.key_ring
        stale = {
            "$or": [
                {f"{ENCRYPTED_KEY_FIELD}.kid": {"$ne": key_ring.primary_key_id}},
                {f"{ENCRYPTED_KEY_FIELD}.v": {"$ne": ENVELOPE_VERSION}},
            ]
        }
        count = 0
        async for document in self.collection.find(stale):
            envelope = self._envelope(document)
            if not key_ring.needs_rotation(envelope):
                continue  # a server cursor may return a document again after we updated it
            keypair = self._keypair(document)
            result = await self.collection.update_one(
                {"_id": document["_id"], f"{ENCRYPTED_KEY_FIELD}.ct": envelope["ct"]},
                {
                    "$set": {
                        ENCRYPTED_KEY_FIELD: key_ring.encrypt(bytes(keypair), keypair.pubkey()),
                        "updated_at": datetime.now(UTC),
                    }
                },
            )
            count += result.modified_count
        return count

    async def _buyer_documents(
        self, user_id: str, limit: int | None, projection: Mapping[str, Any] | None
    ) -> list[Document]:
        user_id = checked_user_id(user_id)
        cursor = self.collection.find(
            {"user_id": user_id, "role": BUYER},
            projection,
            sort=[("position", 1)],
            limit=_checked_limit(limit),
        )
        return await cursor.to_list()

    def _document(self, user_id: str, role: str, position: int, keypair: Keypair) -> Document:
        if not isinstance(keypair, Keypair):
            raise TypeError("wallets are stored from solders Keypair objects")
        public_key = keypair.pubkey()
        now = datetime.now(UTC)
        envelope: Envelope = self.key_ring.encrypt(bytes(keypair), public_key)
        return {
            "_id": ObjectId(),
            "user_id": user_id,
            "role": role,
            "position": position,
            "public_key": str(public_key),
            ENCRYPTED_KEY_FIELD: envelope,
            "created_at": now,
            "updated_at": now,
        }

    def _keypair(self, document: Mapping[str, Any]) -> Keypair:
        where = _describe(document)
        public_key = document.get("public_key")
        try:
            owner = Pubkey.from_string(public_key) if isinstance(public_key, str) else None
        except ValueError:
            owner = None
        if owner is None:
            raise KeyDecryptionError(f"{where}: the stored public key is missing or invalid")
        try:
            secret = self.key_ring.decrypt(self._envelope(document), owner)
        except KeyDecryptionError as e:
            raise KeyDecryptionError(f"{where}: {e.detail}") from None
        try:
            keypair = Keypair.from_bytes(secret)
        except ValueError:
            keypair = None
        if keypair is None or keypair.pubkey() != owner:
            raise KeyDecryptionError(f"{where}: the decrypted key does not match wallet {owner}")
        return keypair

    @staticmethod
    def _envelope(document: Mapping[str, Any]) -> Mapping[str, object]:
        envelope = document.get(ENCRYPTED_KEY_FIELD)
        return envelope if isinstance(envelope, Mapping) else {}

    @staticmethod
    def _already_stored(user_id: str, public_key: str, holder: Mapping[str, Any]) -> WalletConflict:
        if holder.get("user_id") == user_id:
            where = f"user {user_id}'s {_describe_role(holder)}"
        else:
            where = "a wallet of another user"
        return WalletConflict(f"public key {public_key} is already stored as {where}")


def _describe_role(document: Mapping[str, Any]) -> str:
    if document.get("role") == FUNDING:
        return "funding wallet"
    return f"buyer wallet at position {document.get('position')}"


def _describe(document: Mapping[str, Any]) -> str:
    return f"{_describe_role(document)} of user {document.get('user_id')}"
