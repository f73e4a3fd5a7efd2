"""The embedded `memory://` store (tests and the demo): mongomock behind an async adapter with
the subset of PyMongo's `AsyncCollection` premix uses (`premix.documents.DocumentCollection`).

Every document, filter and update it is given goes through PyMongo's own argument checks and
`bson.encode`/`bson.decode` first, so what PyMongo or a server would refuse fails here too, with
PyMongo's exception types; documents come back through BSON as they would from a server. Every
`Store` opened in one process with the same `memory://` URI shares one mongomock client.
"""

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Self

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.common import validate_ok_for_replace, validate_ok_for_update
from pymongo.results import DeleteResult, InsertManyResult, InsertOneResult, UpdateResult

from premix.documents import Document, SortSpec, as_server_sees_it


def _optional(document: Mapping[str, Any] | None) -> Document | None:
    return None if document is None else as_server_sees_it(document)


class MemoryCursor:
    """`AsyncCursor` over a mongomock cursor; documents come back through BSON."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self._iterator: Iterator[Mapping[str, Any]] | None = None

    def sort(self, key_or_list: str | SortSpec, direction: int | None = None) -> Self:
        self._cursor.sort(key_or_list, direction)
        return self

    def limit(self, limit: int) -> Self:
        self._cursor.limit(limit)
        return self

    def skip(self, skip: int) -> Self:
        self._cursor.skip(skip)
        return self

    async def to_list(self, length: int | None = None) -> list[Document]:
        documents = self._cursor if length is None else itertools.islice(self._cursor, length)
        return [as_server_sees_it(document) for document in documents]

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Document:
        if self._iterator is None:
            self._iterator = iter(self._cursor)
        try:
            return as_server_sees_it(next(self._iterator))
        except StopIteration:
            raise StopAsyncIteration from None


class MemoryCollection:
    """An `AsyncCollection` look-alike over a mongomock collection (see the module docstring).

    mongomock is synchronous and in-process, so each call completes without yielding: a call is
    atomic with respect to other tasks on the event loop, like a single-document server write.
    """

    def __init__(self, collection: Any) -> None:
        self._collection = collection

    @property
    def name(self) -> str:
        return str(self._collection.name)

    async def find_one(
        self,
        filter: Mapping[str, Any] | None = None,
        projection: Mapping[str, Any] | None = None,
        *,
        sort: SortSpec | None = None,
    ) -> Document | None:
        found = self._collection.find_one(_optional(filter), _optional(projection), sort=sort)
        return _optional(found)

    def find(
        self,
        filter: Mapping[str, Any] | None = None,
        projection: Mapping[str, Any] | None = None,
        *,
        sort: SortSpec | None = None,
        limit: int = 0,
        skip: int = 0,
    ) -> MemoryCursor:
        cursor = self._collection.find(
            _optional(filter), _optional(projection), sort=sort, limit=limit, skip=skip
        )
        return MemoryCursor(cursor)

    async def insert_one(self, document: Document) -> InsertOneResult:
        # Like PyMongo, an `_id` is added to the caller's document before it is encoded.
        document.setdefault("_id", ObjectId())
        result: InsertOneResult = self._collection.insert_one(as_server_sees_it(document))
        return result

    async def insert_many(
        self, documents: Iterable[Document], *, ordered: bool = True
    ) -> InsertManyResult:
        documents = list(documents)
        for document in documents:
            document.setdefault("_id", ObjectId())
        encoded = [as_server_sees_it(document) for document in documents]
        result: InsertManyResult = self._collection.insert_many(encoded, ordered=ordered)
        return result

    async def update_one(
        self, filter: Mapping[str, Any], update: Mapping[str, Any], *, upsert: bool = False
    ) -> UpdateResult:
        validate_ok_for_update(update)
        result: UpdateResult = self._collection.update_one(
            as_server_sees_it(filter), as_server_sees_it(update), upsert=upsert
        )
        return result

    async def update_many(
        self, filter: Mapping[str, Any], update: Mapping[str, Any], *, upsert: bool = False
    ) -> UpdateResult:
        validate_ok_for_update(update)
        result: UpdateResult = self._collection.update_many(
            as_server_sees_it(filter), as_server_sees_it(update), upsert=upsert
        )
        return result

    async def replace_one(
        self, filter: Mapping[str, Any], replacement: Mapping[str, Any], *, upsert: bool = False
    ) -> UpdateResult:
        validate_ok_for_replace(replacement)
        result: UpdateResult = self._collection.replace_one(
            as_server_sees_it(filter), as_server_sees_it(replacement), upsert=upsert
        )
        return result

    async def find_one_and_update(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        *,
        projection: Mapping[str, Any] | None = None,
        sort: SortSpec | None = None,
        upsert: bool = False,
        return_document: bool = ReturnDocument.BEFORE,
    ) -> Document | None:
        validate_ok_for_update(update)
        found = self._collection.find_one_and_update(
            as_server_sees_it(filter),
            as_server_sees_it(update),
            projection=_optional(projection),
            sort=sort,
            upsert=upsert,
            return_document=return_document,
        )
        return _optional(found)

    async def delete_one(self, filter: Mapping[str, Any]) -> DeleteResult:
        result: DeleteResult = self._collection.delete_one(as_server_sees_it(filter))
        return result

    async def delete_many(self, filter: Mapping[str, Any]) -> DeleteResult:
        result: DeleteResult = self._collection.delete_many(as_server_sees_it(filter))
        return result

    async def count_documents(self, filter: Mapping[str, Any]) -> int:
        return int(self._collection.count_documents(as_server_sees_it(filter)))

    async def create_index(self, keys: str | SortSpec, *, unique: bool = False, name: str) -> str:
        return str(self._collection.create_index(keys, unique=unique, name=name))


# mongomock clients by `memory://...` URI: every `Store.open` in this process shares them.
_memory_clients: dict[str, Any] = {}


def reset_memory_stores(uri: str | None = None) -> None:
    """Forget the embedded store at `uri` (every embedded store when None). Tests use this."""
    if uri is None:
        _memory_clients.clear()
    else:
        _memory_clients.pop(uri, None)


class EmbeddedStoreMissing(RuntimeError):
    """`memory://` was asked for, but mongomock (the `local` extra) is not installed."""


MISSING_MESSAGE = (
    "PREMIX_MONGODB_URI=memory:// needs the embedded store, which production installs leave "
    "out: pip install 'premix[local]' (tests and the demo only)"
)


def memory_database(uri: str, name: str) -> Any:
    """The mongomock database `name` of the embedded store at `uri` (created on first use).
    Raises `EmbeddedStoreMissing` when mongomock is not installed."""
    client = _memory_clients.get(uri)
    if client is None:
        try:
            import mongomock  # the `local` extra: not in a production install
        except ImportError as e:
            raise EmbeddedStoreMissing(MISSING_MESSAGE) from e
        client = _memory_clients.setdefault(uri, mongomock.MongoClient())
    return client.get_database(name)
