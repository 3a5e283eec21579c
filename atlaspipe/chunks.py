"""The work unit that travels everywhere: one entry range of one tree in one file of one sample."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from atlaspipe.errors import ConfigError


@dataclass(frozen=True, order=True)
class Chunk:
    """Entries ``[entry_start, entry_stop)`` of ``tree`` in ``source``, which belongs to ``sample``.

    ``file_entries`` is the file's entry count when the run was planned, so a file that changed
    since then is caught instead of being half-read.
    """

    chunk_id: int
    release: str
    sample: str
    source: str
    tree: str
    entry_start: int
    entry_stop: int
    file_entries: int

    def __post_init__(self) -> None:
        if not 0 <= self.entry_start <= self.entry_stop <= self.file_entries:
            raise ConfigError(
                f"chunk {self.chunk_id} of {self.source}: invalid entry range "
                f"[{self.entry_start}, {self.entry_stop}) for a file of {self.file_entries} entries"
            )

    @property
    def num_entries(self) -> int:
        return self.entry_stop - self.entry_start

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Chunk:
        try:
            return cls(
                chunk_id=int(raw["chunk_id"]), release=str(raw["release"]), sample=str(raw["sample"]),
                source=str(raw["source"]), tree=str(raw["tree"]), entry_start=int(raw["entry_start"]),
                entry_stop=int(raw["entry_stop"]), file_entries=int(raw["file_entries"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed chunk description {raw!r}: {exc}") from exc
