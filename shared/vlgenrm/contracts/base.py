"""The base of every typed contract: a schema version, strict fields, JSON round trips."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

#: Every contract class by name, filled as classes are defined (schemas export, decoders).
CONTRACTS: dict[str, type[Contract]] = {}


def camel(**config: Any) -> ConfigDict:
    """A model config whose fields are camelCase on the wire (Kubernetes APIs are, at every level)
    and keep their Python names in code; either spelling validates."""
    return ConfigDict(alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel), populate_by_name=True, **config)


#: camelCase on the wire, unknown fields refused: the Iteration's spec and status at every level.
CAMEL = camel(extra="forbid")


def utcnow() -> datetime:
    """Timezone-aware now; naive datetimes are ambiguous across pods in different zones."""
    return datetime.now(UTC)


class Contract(BaseModel):
    """A versioned message or object format.

    ``schema_version`` is checked before field validation so that a message written by a
    newer producer is reported as *unknown version*, not as a confusing field error.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    #: Versions this code can read; the first is the one it writes.
    SUPPORTED_VERSIONS: ClassVar[tuple[int, ...]] = (1,)

    schema_version: Literal[1] = Field(1, description="Version of this contract's schema.")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        CONTRACTS[cls.__name__] = cls

    def to_json_bytes(self) -> bytes:
        """Canonical wire form (UTF-8 JSON, aliases, no nulls dropped: explicit is safer)."""
        return self.model_dump_json(by_alias=True).encode()

    @classmethod
    def from_json_bytes(cls, data: bytes | str) -> Contract:
        """Parse and validate; raises pydantic.ValidationError on a bad shape."""
        return cls.model_validate_json(data)
