"""What ``spine-convert`` records in nnU-Net's dataset.json for the later stages (prediction reads the crop back):
one typed record, written and read here only."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Mapping


@dataclass(frozen=True)
class ConversionMetadata:
    """The ``spine_convert`` entry of dataset.json."""

    KEY: ClassVar[str] = "spine_convert"
    tool_version: str
    crop_ap_fraction: float | None
    """Share of the anterior-posterior extent removed on each side (``--crop-ap``; None: no crop); prediction crops
    new images the same way and pastes the masks back."""
    binary: bool
    unknown_levels: str
    case_mapping: str = "case_mapping.csv"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dataset_json(cls, dataset: Mapping[str, Any]) -> ConversionMetadata | None:
        """The record of a dataset.json, None for a dataset that spine-convert did not write."""
        entry = dataset.get(cls.KEY)
        if not entry:
            return None
        return cls(tool_version=str(entry.get("tool_version", "")), crop_ap_fraction=entry.get("crop_ap_fraction"),
                   binary=bool(entry.get("binary", False)), unknown_levels=str(entry.get("unknown_levels", "")),
                   case_mapping=str(entry.get("case_mapping", "case_mapping.csv")))
