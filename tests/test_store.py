"""Store contract: runs on memory:// always, and on MongoDB when PREMIX_TEST_MONGODB_URI is set.

Tests taking the `store` fixture run once per backend; the rest are about `memory://` itself
or about opening a store.
"""

import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import bson
import pytest
from bson.errors import InvalidDocument
from pydantic import SecretStr
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError
from solders.keypair import Keypair

from premix.constants import WALLETS_COLLECTION
from premix.errors import TransientError
from premix.keys import KeyConfigError, KeyDecryptionError, KeyRing
from premix.settings import Settings
from premix.store import Store, StoreConfigError, reset_memory_stores
from premix.wallets import TooManyBuyerWallets, WalletConflict
from tests.fixtures.store import secret_forms


async def raw_wallets(store: Store, **query: Any) -> list[dict[str, Any]]:
    return await store.collection(WALLETS_COLLECTION).find(query, sort=[("_id", 1)]).to_list()


# --- funding wallet ---


async def test_funding_wallet_is_added_and_read_back_decrypted(store: Store) -> None:
    funding = Keypair()
    await store.wallets.set_funding_wallet("u1", funding)

    assert await store.wallets.funding_wallet("u1") == funding
    assert await store.wallets.funding_public_key("u1") == funding.pubkey()
    [document] = await raw_wallets(store)
    assert document["user_id"] == "u1"
    assert document["role"] == "funding"
    assert document["public_key"] == str(funding.pubkey())
    assert document["encrypted_secret_key"]["kid"] == "test1"


async def test_funding_wallet_is_replaced_not_duplicated(store: Store) -> None:
    await store.wallets.set_funding_wallet("u1", Keypair())
    replacement = Keypair()
    await store.wallets.set_funding_wallet("u1", replacement)
    await store.wallets.set_funding_wallet("u1", replacement)  # same key again: no conflict

    assert await store.wallets.funding_wallet("u1") == replacement
    assert [doc["public_key"] for doc in await raw_wallets(store)] == [str(replacement.pubkey())]


async def test_user_without_wallets_has_none(store: Store) -> None:
    await store.wallets.set_funding_wallet("u1", Keypair())
    assert await store.wallets.funding_wallet("u2") is None
    assert await store.wallets.funding_public_key("u2") is None
    assert await store.wallets.buyer_wallets("u2") == []
    assert await store.wallets.buyer_public_keys("u2") == []


# --- buyer wallets ---


async def test_buyer_wallets_come_back_in_the_order_added(store: Store) -> None:
    first, second = [Keypair() for _ in range(3)], [Keypair() for _ in range(2)]

    assert await store.wallets.add_buyer_wallets("u1", first) == [0, 1, 2]
    assert await store.wallets.add_buyer_wallets("u1", second) == [3, 4]

    assert await store.wallets.buyer_wallets("u1") == first + second
    assert await store.wallets.buyer_public_keys("u1") == [kp.pubkey() for kp in first + second]
    assert await store.wallets.buyer_wallets("u1", limit=2) == first[:2]
    assert await store.wallets.buyer_public_keys("u1", limit=4) == [
        kp.pubkey() for kp in (first + second)[:4]
    ]
    assert await store.wallets.buyer_wallet_count("u1") == 5
    assert [doc["position"] for doc in await raw_wallets(store, role="buyer")] == [0, 1, 2, 3, 4]


async def test_limit_must_be_positive(store: Store) -> None:
    for limit in (0, -1, True):
        with pytest.raises(ValueError, match="limit must be a positive int or None"):
            await store.wallets.buyer_wallets("u1", limit=limit)


async def test_73_buyer_wallets_fit_and_the_74th_is_refused_writing_nothing(store: Store) -> None:
    wallets = [Keypair() for _ in range(73)]
    await store.wallets.add_buyer_wallets("u1", wallets)

    with pytest.raises(TooManyBuyerWallets) as caught:
        await store.wallets.add_buyer_wallets("u1", [Keypair()])

    assert str(caught.value) == (
        "Too many buyer wallets: user u1 has 73 buyer wallet(s); adding 1 would exceed the "
        "maximum of 73. Nothing was added"
    )
    assert await store.wallets.buyer_wallets("u1") == wallets


async def test_a_batch_crossing_73_writes_nothing(store: Store) -> None:
    await store.wallets.add_buyer_wallets("u1", [Keypair() for _ in range(70)])

    with pytest.raises(TooManyBuyerWallets, match="has 70 buyer wallet\\(s\\); adding 4"):
        await store.wallets.add_buyer_wallets("u1", [Keypair() for _ in range(4)])
    with pytest.raises(TooManyBuyerWallets, match="has 0 buyer wallet\\(s\\); adding 74"):
        await store.wallets.add_buyer_wallets("u2", [Keypair() for _ in range(74)])

    assert await store.wallets.buyer_wallet_count("u1") == 70
    assert await store.wallets.buyer_wallet_count("u2") == 0


async def test_users_wallets_are_kept_apart(store: Store) -> None:
    mine, theirs = [Keypair(), Keypair()], [Keypair()]
    await store.wallets.add_buyer_wallets("u1", mine)
    await store.wallets.add_buyer_wallets("u2", theirs)

    assert await store.wallets.buyer_wallets("u1") == mine
    assert await store.wallets.buyer_wallets("u2") == theirs
    assert await store.wallets.delete_user("u1") == 2
    assert await store.wallets.buyer_wallets("u1") == []
    assert await store.wallets.buyer_wallets("u2") == theirs


# --- uniqueness ---


async def test_a_public_key_is_stored_once(store: Store) -> None:
    funding, buyer, other_users = Keypair(), Keypair(), Keypair()
    await store.wallets.set_funding_wallet("u1", funding)
    await store.wallets.add_buyer_wallets("u1", [buyer])
    await store.wallets.add_buyer_wallets("u2", [other_users])

    with pytest.raises(WalletConflict) as caught:
        await store.wallets.add_buyer_wallets("u1", [Keypair(), funding])
    assert str(caught.value) == (
        f"Wallet already stored: public key {funding.pubkey()} is already stored as user u1's "
        "funding wallet"
    )
    with pytest.raises(WalletConflict, match=r"as user u1.s buyer wallet at position 0$"):
        await store.wallets.set_funding_wallet("u1", buyer)
    with pytest.raises(WalletConflict, match=r"is already stored as a wallet of another user$"):
        await store.wallets.add_buyer_wallets("u1", [other_users])
    repeated = Keypair()
    with pytest.raises(WalletConflict, match=f"public key {repeated.pubkey()} is given twice"):
        await store.wallets.add_buyer_wallets("u3", [repeated, Keypair(), repeated])

    assert len(await raw_wallets(store)) == 3
    assert await store.wallets.funding_wallet("u1") == funding


async def test_unique_indexes_are_enforced_by_the_database(store: Store) -> None:
    await store.wallets.add_buyer_wallets("u1", [Keypair()])
    [document] = await raw_wallets(store)
    wallets = store.collection(WALLETS_COLLECTION)

    same_public_key = {**document, "_id": bson.ObjectId(), "user_id": "u2"}
    with pytest.raises(DuplicateKeyError):
        await wallets.insert_one(same_public_key)
    same_position = {**document, "_id": bson.ObjectId(), "public_key": str(Keypair().pubkey())}
    with pytest.raises(DuplicateKeyError):
        await wallets.insert_one(same_position)

    assert await wallets.count_documents({}) == 1


# --- user ids reach MongoDB only as strings ---

NOT_STRINGS: list[object] = [{"$ne": None}, {"$gt": ""}, 42, None, b"u1", ["u1"]]


@pytest.mark.parametrize("user_id", NOT_STRINGS, ids=repr)
async def test_non_str_user_id_is_refused_before_reaching_the_store(
    store: Store, user_id: Any
) -> None:
    await store.wallets.set_funding_wallet("u1", Keypair())
    await store.wallets.add_buyer_wallets("u1", [Keypair()])
    calls = [
        store.wallets.set_funding_wallet(user_id, Keypair()),
        store.wallets.add_buyer_wallets(user_id, [Keypair()]),
        store.wallets.funding_wallet(user_id),
        store.wallets.funding_public_key(user_id),
        store.wallets.buyer_wallets(user_id),
        store.wallets.buyer_public_keys(user_id),
        store.wallets.buyer_wallet_count(user_id),
        store.wallets.delete_user(user_id),
    ]
    for call in calls:
        with pytest.raises(TypeError) as caught:
            await call
        assert str(caught.value) == "user_id must be a str"

    assert len(await raw_wallets(store)) == 2


async def test_empty_user_id_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="user_id must not be empty"):
        await store.wallets.set_funding_wallet("", Keypair())


async def test_a_user_id_that_looks_like_an_operator_is_only_a_string(store: Store) -> None:
    wallet = Keypair()
    await store.wallets.add_buyer_wallets("u1", [Keypair()])
    await store.wallets.add_buyer_wallets("$ne", [wallet])
    assert await store.wallets.buyer_wallets("$ne") == [wallet]


# --- no plaintext, clear decryption failures ---


async def test_documents_hold_no_plaintext_secret(store: Store) -> None:
    funding, buyers = Keypair(), [Keypair() for _ in range(3)]
    await store.wallets.set_funding_wallet("u1", funding)
    await store.wallets.add_buyer_wallets("u1", buyers)

    documents = await raw_wallets(store)
    assert len(documents) == 4
    for document in documents:
        stored_text = repr(document)
        stored_bytes = bson.encode(document)
        for keypair in [funding, *buyers]:
            for form in secret_forms(keypair):
                assert form not in stored_text
            assert bytes(keypair) not in stored_bytes
            assert bytes(keypair)[:32] not in stored_bytes


async def test_ciphertext_moved_to_another_wallet_fails_naming_wallet_and_user(
    store: Store,
) -> None:
    funding, buyer = Keypair(), Keypair()
    await store.wallets.set_funding_wallet("u1", funding)
    await store.wallets.add_buyer_wallets("u1", [buyer])
    wallets = store.collection(WALLETS_COLLECTION)
    funding_document = await wallets.find_one({"role": "funding"})
    assert funding_document is not None
    stolen = funding_document["encrypted_secret_key"]
    await wallets.update_one({"role": "buyer"}, {"$set": {"encrypted_secret_key": stolen}})

    with pytest.raises(KeyDecryptionError) as caught:
        await store.wallets.buyer_wallets("u1")

    message = str(caught.value)
    assert message == (
        "Wallet key could not be decrypted: buyer wallet at position 0 of user u1: wallet "
        f"{buyer.pubkey()}: authentication failed under key 'test1' (the ciphertext was "
        "altered, belongs to another wallet, or key 'test1' is not the key it was encrypted with)"
    )
    for form in [stolen["ct"], *secret_forms(funding), *secret_forms(buyer)]:
        assert form not in message
    assert await store.wallets.funding_wallet("u1") == funding


async def test_wallet_store_without_keys_lists_public_keys_but_refuses_secrets(
    store_settings: Settings, store: Store
) -> None:
    funding = Keypair()
    await store.wallets.set_funding_wallet("u1", funding)
    keyless = await Store.open(store_settings.model_copy(update={"encryption_keys": SecretStr("")}))

    assert await keyless.wallets.funding_public_key("u1") == funding.pubkey()
    with pytest.raises(KeyConfigError) as caught:
        await keyless.wallets.funding_wallet("u1")
    assert str(caught.value) == (
        "Encryption keys misconfigured: PREMIX_ENCRYPTION_KEYS is not set; the wallet store "
        "needs at least one key"
    )
    await keyless.close()


# --- rotation ---


async def test_reencrypt_all_moves_every_key_to_the_newest_key(
    store_settings: Settings, store: Store, encryption_keys: str
) -> None:
    funding, buyers = Keypair(), [Keypair() for _ in range(4)]
    await store.wallets.set_funding_wallet("u1", funding)
    await store.wallets.add_buyer_wallets("u1", buyers)
    await store.wallets.add_buyer_wallets("u2", [Keypair()])
    new_entry = KeyRing.generate_key("test2")
    rotated = await Store.open(store_settings, KeyRing.parse(f"{new_entry},{encryption_keys}"))

    assert await rotated.wallets.funding_wallet("u1") == funding  # old key still configured
    assert await rotated.wallets.reencrypt_all() == 6
    assert await rotated.wallets.reencrypt_all() == 0

    assert {doc["encrypted_secret_key"]["kid"] for doc in await raw_wallets(store)} == {"test2"}
    new_only = await Store.open(store_settings, KeyRing.parse(new_entry))
    assert await new_only.wallets.funding_wallet("u1") == funding
    assert await new_only.wallets.buyer_wallets("u1") == buyers

    with pytest.raises(KeyDecryptionError) as caught:
        await store.wallets.funding_wallet("u1")  # only the removed key 'test1'
    assert str(caught.value) == (
        "Wallet key could not be decrypted: funding wallet of user u1: wallet "
        f"{funding.pubkey()} is encrypted with key 'test2', which is not configured in "
        "PREMIX_ENCRYPTION_KEYS (configured: test1)"
    )
    for opened in (rotated, new_only):
        await opened.close()


async def test_reencrypt_all_names_a_wallet_it_cannot_decrypt(
    store_settings: Settings, store: Store
) -> None:
    funding = Keypair()
    await store.wallets.set_funding_wallet("u1", funding)
    unrelated = await Store.open(store_settings, KeyRing.parse(KeyRing.generate_key("other")))

    with pytest.raises(KeyDecryptionError) as caught:
        await unrelated.wallets.reencrypt_all()

    assert str(caught.value) == (
        "Wallet key could not be decrypted: funding wallet of user u1: wallet "
        f"{funding.pubkey()} is encrypted with key 'test1', which is not configured in "
        "PREMIX_ENCRYPTION_KEYS (configured: other)"
    )
    await unrelated.close()


# --- what a server would refuse is refused by every backend ---


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ({"amount": Decimal("1.5")}, InvalidDocument),
        ({1: "non-str key"}, InvalidDocument),
        ({"lamports": 2**63}, OverflowError),
        ({"nested": {"when": object()}}, InvalidDocument),
    ],
    ids=["decimal", "int-key", "beyond-int64", "object"],
)
async def test_documents_a_server_would_refuse_are_refused_and_not_written(
    store: Store, document: dict[Any, Any], error: type[Exception]
) -> None:
    scratch = store.collection("scratch")
    await scratch.insert_one({"_id": "row", "lamports": 1})

    with pytest.raises(error):
        await scratch.insert_one(dict(document))
    with pytest.raises(error):
        await scratch.insert_many([{"ok": 1}, dict(document)])
    with pytest.raises(error):
        await scratch.update_one({"_id": "row"}, {"$set": dict(document)})
    with pytest.raises(error):
        await scratch.replace_one({"_id": "row"}, {"ok": 1, **document})

    assert await scratch.find({}).to_list() == [{"_id": "row", "lamports": 1}]


async def test_updates_and_replacements_pymongo_would_refuse_are_refused(store: Store) -> None:
    scratch = store.collection("scratch")
    await scratch.insert_one({"_id": "row", "lamports": 1})

    with pytest.raises(ValueError, match="update only works with \\$ operators"):
        await scratch.update_one({"_id": "row"}, {"lamports": 2})
    with pytest.raises(ValueError, match="update only works with \\$ operators"):
        await scratch.find_one_and_update({"_id": "row"}, {"lamports": 2})
    with pytest.raises(ValueError, match="update cannot be empty"):
        await scratch.update_many({}, {})
    with pytest.raises(ValueError, match="replacement can not include \\$ operators"):
        await scratch.replace_one({"_id": "row"}, {"$set": {"lamports": 2}})

    assert await scratch.find({}).to_list() == [{"_id": "row", "lamports": 1}]


async def test_documents_come_back_as_a_server_returns_them(store: Store) -> None:
    scratch = store.collection("scratch")
    written_at = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
    document: dict[str, Any] = {"pair": (1, 2), "at": written_at, "lamports": 2**63 - 1}

    result = await scratch.insert_one(document)

    assert document["_id"] == result.inserted_id  # like PyMongo, _id is added to the input
    assert await scratch.find_one({"_id": result.inserted_id}, {"_id": 0}) == {
        "pair": [1, 2],
        "at": datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC),  # milliseconds, UTC-aware
        "lamports": 2**63 - 1,
    }


# --- the collection surface premix uses behaves like PyMongo on every backend ---


async def test_collection_surface(store: Store) -> None:
    runs = store.collection("runs")
    inserted = await runs.insert_many([{"_id": f"r{n}", "n": n, "state": "new"} for n in range(5)])
    assert inserted.inserted_ids == ["r0", "r1", "r2", "r3", "r4"]

    assert [doc["n"] for doc in await runs.find({}, sort=[("n", -1)], limit=2).to_list()] == [4, 3]
    assert [doc["n"] async for doc in runs.find({"n": {"$gte": 3}}).sort("n", 1)] == [3, 4]
    assert [doc["_id"] for doc in await runs.find().sort("n", -1).skip(1).limit(2).to_list()] == [
        "r3",
        "r2",
    ]
    assert len(await runs.find({}).to_list(3)) == 3
    assert await runs.count_documents({"state": "new"}) == 5

    before = await runs.find_one_and_update({"_id": "r1"}, {"$set": {"state": "sent"}})
    after = await runs.find_one_and_update(
        {"_id": "r2"}, {"$inc": {"n": 10}}, return_document=ReturnDocument.AFTER
    )
    assert before is not None and before["state"] == "new"
    assert after == {"_id": "r2", "n": 12, "state": "new"}
    upserted = await runs.find_one_and_update(
        {"_id": "r9"}, {"$set": {"n": 9}}, upsert=True, return_document=ReturnDocument.AFTER
    )
    assert upserted == {"_id": "r9", "n": 9}
    assert await runs.find_one_and_update({"_id": "none"}, {"$set": {"n": 0}}) is None

    many = await runs.update_many({"state": "new"}, {"$set": {"state": "planned"}})
    assert (many.matched_count, many.modified_count) == (4, 4)
    one = await runs.update_one({"_id": "r7"}, {"$set": {"n": 7}}, upsert=True)
    assert (one.matched_count, one.upserted_id) == (0, "r7")
    replaced = await runs.replace_one({"_id": "r0"}, {"n": 100})
    assert replaced.modified_count == 1
    assert await runs.find_one({"_id": "r0"}) == {"_id": "r0", "n": 100}
    assert await runs.find_one({"n": {"$lt": 100}}, sort=[("n", -1)]) == {
        "_id": "r2",
        "n": 12,
        "state": "planned",
    }

    assert (await runs.delete_one({"_id": "r0"})).deleted_count == 1
    assert (await runs.delete_many({"state": "planned"})).deleted_count == 3
    assert await runs.count_documents({}) == 3

    name = await runs.create_index([("n", 1)], unique=True, name="n_unique")
    assert name == "n_unique"
    with pytest.raises(DuplicateKeyError):
        await runs.insert_one({"n": 9})


# --- the embedded store and opening a store ---


async def test_memory_store_is_shared_within_the_process_by_uri(key_ring: KeyRing) -> None:
    settings = Settings(mongodb_uri="memory://shared-test", mongodb_database="premix_test")
    first = await Store.open(settings, key_ring)
    second = await Store.open(settings, key_ring)
    elsewhere = await Store.open(
        settings.model_copy(update={"mongodb_uri": "memory://other-test"}), key_ring
    )
    other_database = await Store.open(
        settings.model_copy(update={"mongodb_database": "other"}), key_ring
    )
    try:
        funding = Keypair()
        await first.wallets.set_funding_wallet("u1", funding)

        assert await second.wallets.funding_wallet("u1") == funding
        assert await elsewhere.wallets.funding_wallet("u1") is None
        assert await other_database.wallets.funding_wallet("u1") is None

        reset_memory_stores("memory://shared-test")
        fresh = await Store.open(settings, key_ring)
        assert await fresh.wallets.funding_wallet("u1") is None
    finally:
        reset_memory_stores()


async def test_store_opens_with_keys_from_settings() -> None:
    entry = KeyRing.generate_key("from-env")
    settings = Settings(mongodb_uri="memory://keys-from-settings", encryption_keys=entry)
    store = await Store.open(settings)
    try:
        funding = Keypair()
        await store.wallets.set_funding_wallet("u1", funding)
        [document] = await raw_wallets(store)
        assert document["encrypted_secret_key"]["kid"] == "from-env"
        assert await store.wallets.funding_wallet("u1") == funding
    finally:
        reset_memory_stores("memory://keys-from-settings")


async def test_malformed_keys_in_settings_are_refused_at_open() -> None:
    settings = Settings(mongodb_uri="memory://bad-keys", encryption_keys="k1:c2hvcnQ=")
    with pytest.raises(KeyConfigError) as caught:
        await Store.open(settings)
    assert str(caught.value) == (
        "Encryption keys misconfigured: PREMIX_ENCRYPTION_KEYS: key 'k1' is not 32 bytes of base64"
    )


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb://user:hunter2@db.example:notaport",
        "postgres://user:hunter2@db",
        "mongodb://user:hunter2@/db",
    ],
)
async def test_unusable_mongodb_uri_is_refused_without_echoing_it(uri: str) -> None:
    with pytest.raises(StoreConfigError) as caught:
        await Store.open(Settings(mongodb_uri=uri))
    assert str(caught.value).startswith(
        "Store misconfigured: PREMIX_MONGODB_URI is not a usable MongoDB URI ("
    )
    assert "hunter2" not in str(caught.value)
    assert uri not in str(caught.value)


async def test_ping_reports_an_unreachable_mongodb_as_transient() -> None:
    # Nothing listens on loopback port 9; the short server selection timeout keeps this fast.
    settings = Settings(mongodb_uri="mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=100")
    store = await Store.open(settings)
    try:
        with pytest.raises(TransientError) as caught:
            await store.ping()
        assert str(caught.value) == (
            "Temporary failure: MongoDB did not answer (ServerSelectionTimeoutError)"
        )
        assert caught.value.permanent is False
    finally:
        await store.close()


async def test_ping_answers_on_every_backend(store: Store) -> None:
    await store.ping()
    assert await store.collection("scratch").count_documents({}) == 0


async def test_memory_store_without_the_local_extra_is_a_clear_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a production install (the Docker image) leaves mongomock out: memory:// names the extra
    monkeypatch.setitem(sys.modules, "mongomock", None)  # import mongomock -> ImportError
    settings = Settings(mongodb_uri="memory://no-extra-here")

    with pytest.raises(StoreConfigError) as raised:
        await Store.open(settings)

    assert str(raised.value) == (
        "Store misconfigured: PREMIX_MONGODB_URI=memory:// needs the embedded store, which "
        "production installs leave "
        "out: pip install 'premix[local]' (tests and the demo only)"
    )
