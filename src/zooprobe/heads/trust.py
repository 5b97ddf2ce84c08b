"""What a head knows about its own limits, saved next to its weights.

`Trust` bundles a head's applicability domain (`zooprobe.heads.domain`), its calibration (intervals and
temperatures) and per-target reliability (`zooprobe.heads.uncertainty`). The trainer fits it after the
final evaluation; it lives in the head folder as two files::

    trust.json           format_version, calibration (validation residuals, temperatures), reliability
                         (test scores), domain (architecture ranges, k, thresholds, shares in domain)
    domain.safetensors   the domain's arrays: per space (statistics, representation) the train split's
                         mean and scale, its standardized features and its leave-one-out k-NN distances

A head folder without them (written by an older zooprobe) still loads; its predictions then carry no
domain, interval or reliability, and say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zooprobe.core.config import check_record
from zooprobe.core.files import atomic_write_json, read_json
from zooprobe.core.tensorfile import read_state, save_state
from zooprobe.errors import InvalidInputError, ZooFormatError
from zooprobe.heads.domain import ApplicabilityDomain
from zooprobe.heads.integrity import write_content_hash
from zooprobe.heads.uncertainty import Calibration, Reliability

TRUST_FILE = "trust.json"
DOMAIN_FILE = "domain.safetensors"
TRUST_FORMAT = 1


@dataclass
class Trust:
    """A head's domain, calibration and reliability (module docs); each part may be missing."""

    domain: ApplicabilityDomain | None = None
    calibration: Calibration | None = None
    reliability: dict[str, Reliability] = field(default_factory=dict)

    def save(self, folder: str | Path) -> None:
        """Write `DOMAIN_FILE` (when there is a domain), then `TRUST_FILE`, each atomically, then the head
        folder's content hash (`zooprobe.heads.integrity`)."""
        folder = Path(folder)
        if self.domain is not None:
            save_state(folder / DOMAIN_FILE, self.domain.arrays(), {"format_version": TRUST_FORMAT})
        record: dict[str, Any] = {
            "format_version": TRUST_FORMAT,
            "domain": None if self.domain is None else self.domain.to_record(),
            "calibration": None if self.calibration is None else self.calibration.to_record(),
            "reliability": {name: r.to_record() for name, r in self.reliability.items()},
        }
        atomic_write_json(folder / TRUST_FILE, record)
        write_content_hash(folder)

    @classmethod
    def load(cls, folder: str | Path) -> Trust | None:
        """The trust files of a head folder (None when it has none); a damaged one is a `ZooFormatError`
        naming the file."""
        folder = Path(folder)
        path = folder / TRUST_FILE
        if not path.is_file():
            return None
        data = check_record(
            read_json(path, "head trust file", ZooFormatError),
            str(path),
            ZooFormatError,
            fields=("format_version", "domain", "calibration", "reliability"),
            version=TRUST_FORMAT,
        )
        try:
            domain = None
            if data["domain"] is not None:
                try:
                    arrays, _ = read_state(folder / DOMAIN_FILE, what="head domain file")
                except InvalidInputError as e:
                    raise ZooFormatError(str(e)) from e
                domain = ApplicabilityDomain.from_saved(data["domain"], arrays)
            calibration = (
                None if data["calibration"] is None else Calibration.from_record(data["calibration"])
            )
            reliability = {
                str(name): Reliability.from_record(r) for name, r in _mapping(data["reliability"]).items()
            }
        except (KeyError, TypeError, ValueError) as e:
            raise ZooFormatError(
                f"{path}: the head's trust file (or {DOMAIN_FILE}) is damaged ({type(e).__name__}: {e}); "
                "restore it, or train the head again"
            ) from e
        return cls(domain, calibration, reliability)


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a mapping, got {type(value).__name__}")
    return value


__all__ = ["DOMAIN_FILE", "TRUST_FILE", "Trust"]
