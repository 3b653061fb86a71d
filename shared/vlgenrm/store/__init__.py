"""Object storage: the BlobStore interface, S3 and local-filesystem implementations."""

from vlgenrm.settings import StoreKind, StoreSettings
from vlgenrm.store.base import (
    BlobStore,
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFoundError,
    Page,
    StoreAuthError,
    StoreError,
    StoreUnavailableError,
)
from vlgenrm.store.local import LocalStore


def make_store(settings: StoreSettings) -> BlobStore:
    """The BlobStore the settings ask for; S3Store is imported only when used."""
    if settings.kind is StoreKind.S3:
        from vlgenrm.store.s3 import S3Store

        return S3Store(settings)
    return LocalStore(settings.root)


__all__ = [
    "BlobStore",
    "InvalidKeyError",
    "LocalStore",
    "ObjectInfo",
    "ObjectNotFoundError",
    "Page",
    "StoreAuthError",
    "StoreError",
    "StoreUnavailableError",
    "make_store",
]
