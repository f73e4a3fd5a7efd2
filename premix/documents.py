"""The document types premix stores and the collection surface it uses: PyMongo's
`AsyncCollection` and the `memory://` adapter (`premix.memory_store`) both satisfy
`DocumentCollection`; `as_server_sees_it` is a document after the BSON round trip a server
makes. No I/O here: the pure ledger and the wallet store import these."""

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC
from typing import Any, Final, Protocol, Self

import bson
from bson.codec_options import CodecOptions
from pymongo import ReturnDocument
from pymongo.errors import DocumentTooLarge
from pymongo.results import DeleteResult, InsertManyResult, InsertOneResult, UpdateResult

Document = dict[str, Any]
SortSpec = Sequence[tuple[str, int]]

# Both backends hand back timezone-aware UTC datetimes.
CODEC_OPTIONS: Final[CodecOptions[Document]] = CodecOptions(tz_aware=True, tzinfo=UTC)
MAX_BSON_DOCUMENT_BYTES: Final = 16 * 1024 * 1024


class DocumentCursor(Protocol):
    """The part of PyMongo's `AsyncCursor` premix uses."""

    def sort(self, key_or_list: str | SortSpec, direction: int | None = None) -> Self: ...

    def limit(self, limit: int) -> Self: ...

    def skip(self, skip: int) -> Self: ...

    async def to_list(self, length: int | None = None) -> list[Document]: ...

    def __aiter__(self) -> AsyncIterator[Document]: ...


class DocumentCollection(Protocol):
    """The part of PyMongo's `AsyncCollection` premix uses; the memory adapter implements it."""

    @property
    def name(self) -> str: ...

    async def find_one(
        self,
        filter: Mapping[str, Any] | None = None,
        projection: Mapping[str, Any] | None = None,
        *,
        sort: SortSpec | None = None,
    ) -> Document | None: ...

    def find(
        self,
        filter: Mapping[str, Any] | None = None,
        projection: Mapping[str, Any] | None = None,
        *,
        sort: SortSpec | None = None,
        limit: int = 0,
        skip: int = 0,
    ) -> DocumentCursor: ...

    async def insert_one(self, document: Document) -> InsertOneResult: ...

    async def insert_many(
        self, documents: Iterable[Document], *, ordered: bool = True
    ) -> InsertManyResult: ...

    async def update_one(
        self, filter: Mapping[str, Any], update: Mapping[str, Any], *, upsert: bool = False
    ) -> UpdateResult: ...

    async def update_many(
        self, filter: Mapping[str, Any], update: Mapping[str, Any], *, upsert: bool = False
    ) -> UpdateResult: ...

    async def replace_one(
        self, filter: Mapping[str, Any], replacement: Mapping[str, Any], *, upsert: bool = False
    ) -> UpdateResult: ...

    async def find_one_and_update(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        *,
        projection: Mapping[str, Any] | None = None,
        sort: SortSpec | None = None,
        upsert: bool = False,
        return_document: bool = ReturnDocument.BEFORE,
    ) -> Document | None: ...

    async def delete_one(self, filter: Mapping[str, Any]) -> DeleteResult: ...

    async def delete_many(self, filter: Mapping[str, Any]) -> DeleteResult: ...

    async def count_documents(self, filter: Mapping[str, Any]) -> int: ...

    async def create_index(
        self, keys: str | SortSpec, *, unique: bool = False, name: str
    ) -> str: ...


def as_server_sees_it(document: Mapping[str, Any]) -> Document:
    """`document` after a BSON round trip, as a server would store it.

    Raises what PyMongo raises before sending: `bson.errors.InvalidDocument` (non-str keys,
    unencodable values such as `Decimal`), `OverflowError` (ints beyond int64),
    `DocumentTooLarge` (over 16 MiB).
    """
    encoded = bson.encode(document, codec_options=CODEC_OPTIONS)
    if len(encoded) > MAX_BSON_DOCUMENT_BYTES:
        raise DocumentTooLarge(
            f"BSON document too large ({len(encoded)} bytes) - the connected server supports "
            f"BSON document sizes up to {MAX_BSON_DOCUMENT_BYTES} bytes."
        )
    return bson.decode(encoded, codec_options=CODEC_OPTIONS)
