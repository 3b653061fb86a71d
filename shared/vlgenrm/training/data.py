"""The training set: the sampler's TrainingRecord shards, checked once by the driver, then
streamed by every Ray Train worker straight from the store (images by content hash).

Bad records never stop a run: malformed lines, duplicates and records whose image is missing
are counted and skipped in a :class:`DataReport`. Only a set with nothing usable fails.
"""

from __future__ import annotations

import io
import logging
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from pydantic import Field, ValidationError

from vlgenrm.contracts import Contract, TrainingRecord
from vlgenrm.stages import InvalidShardError, jsonl, read_shard
from vlgenrm.store import BlobStore
from vlgenrm.store.base import StoreError

log = logging.getLogger(__name__)

MAX_PROBLEMS = 20  # listed in the report; the counts cover all of them


class DataReport(Contract):
    """What the driver found in the training set before training."""

    shards: int = Field(ge=0)
    lines: int = Field(0, ge=0, description="Non-empty lines read.")
    usable: int = Field(0, ge=0)
    malformed: int = Field(0, ge=0, description="Lines that are not a valid TrainingRecord.")
    duplicates: int = Field(0, ge=0, description="Records whose id was seen before.")
    missing_images: int = Field(0, ge=0, description="Records whose image is not in the store.")
    problems: list[str] = Field(default_factory=list, description=f"The first {MAX_PROBLEMS} problems, for a human.")

    @property
    def skipped(self) -> int:
        return self.malformed + self.duplicates + self.missing_images

    def note(self, problem: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)


def load_training_set(store: BlobStore, uris: Sequence[str], *, check_images: bool = True, threads: int = 8) -> tuple[list[TrainingRecord], DataReport]:
    """Read and check the records of ``uris``; a missing shard fails, bad records are skipped."""
    report = DataReport(shards=len(uris))
    records: list[TrainingRecord] = []
    seen: set[str] = set()
    for uri in uris:
        data = read_shard(store, uri, "training input")
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            report.lines += 1
            try:
                record = TrainingRecord.model_validate_json(line)
            except ValidationError as exc:
                report.malformed += 1
                report.note(f"{uri} line {number}: not a TrainingRecord: {exc.errors()[0]['msg']}")
                continue
            if record.id in seen:
                report.duplicates += 1
                report.note(f"{uri} line {number}: duplicate record {record.id}")
                continue
            seen.add(record.id)
            records.append(record)
    if check_images:
        keys = sorted({r.image.key for r in records})
        with ThreadPoolExecutor(max(1, threads)) as pool:
            present = dict(zip(keys, pool.map(store.exists, keys), strict=True))
        kept = []
        for r in records:
            if present[r.image.key]:
                kept.append(r)
            else:
                report.missing_images += 1
                report.note(f"record {r.id}: image {r.image.key} is not in the store")
        records = kept
    report.usable = len(records)
    if not records:
        raise InvalidShardError(
            f"the training set has no usable records ({report.lines} lines: {report.malformed} malformed, "
            f"{report.duplicates} duplicates, {report.missing_images} with missing images)"
        )
    log.info("training set: %d usable of %d lines (%d skipped)", report.usable, report.lines, report.skipped)
    return records, report


def write_training_set(store: BlobStore, key: str, records: Sequence[TrainingRecord]) -> str:
    """The checked set as one JSON-lines object the workers read (deterministic bytes)."""
    store.put_bytes(key, jsonl(records))
    return key


class RecordSource:
    """A worker's view of the training set: records by index, images fetched and cached."""

    def __init__(self, store: BlobStore, key: str, *, image_size: int | None = None, cache_images: int = 512) -> None:
        self.store, self.image_size, self.cache_images = store, image_size, cache_images
        lines = store.get_bytes(key).decode().splitlines()
        self.records = [TrainingRecord.model_validate_json(line) for line in lines if line.strip()]
        self._images: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self.records)

    def image(self, record: TrainingRecord) -> bytes:
        """The record's image, verified against its digest (raises StoreError when it is not)."""
        key = record.image.key
        if key in self._images:
            self._images.move_to_end(key)
            return self._images[key]
        data = self.store.get_image(record.image)
        if self.image_size is not None:
            data = _shrink(data, self.image_size)
        self._images[key] = data
        if len(self._images) > self.cache_images:
            self._images.popitem(last=False)
        return data

    def fetch(self, record: TrainingRecord) -> bytes | None:
        """Like :meth:`image`, but None when the image is gone or corrupt (counted by the caller)."""
        try:
            return self.image(record)
        except (StoreError, OSError) as exc:
            log.warning("record %s: image unusable: %s", record.id, exc)
            return None


def _shrink(data: bytes, longest: int) -> bytes:
    """Downscale so the longer side is at most ``longest`` (keeps undecodable bytes as they are:
    the GenRM reports those with a typed error)."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        if max(image.size) <= longest:
            return data
        image.thumbnail((longest, longest))
        out = io.BytesIO()
        image.convert("RGB").save(out, format="PNG")
        return out.getvalue()
    except Exception:  # noqa: BLE001 - decoding problems are reported where the image is used
        return data
