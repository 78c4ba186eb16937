"""What an import costs in DynamoDB on-demand capacity, estimated from the files' headers.

Each planned block (``plan.planned_blocks``) is read once (a consistent BatchGetItem read of an
item under 4 KB: one read unit) and written once; a block sized by ``block_slots`` 0 fits one
write unit with typical values (``block_layout.AUTO_SLOTS``), full-precision doubles take up
to four. Prices: us-east-1 on-demand, late 2026 (see docs/import.md).
"""
from __future__ import annotations

from dataclasses import dataclass

DOLLARS_PER_WRITE_UNIT = 0.625e-6
DOLLARS_PER_READ_UNIT = 0.125e-6
WORST_UNITS_PER_BLOCK = 4  # 448 full-precision doubles: ~3.4 KB


@dataclass
class CostEstimate:
    files: int = 0
    blocks: int = 0

    @property
    def write_units(self) -> int:
        return self.blocks

    @property
    def read_units(self) -> int:
        return self.blocks

    def dollars(self, units_per_block: int = 1) -> float:
        return (self.blocks * units_per_block * DOLLARS_PER_WRITE_UNIT + self.read_units * DOLLARS_PER_READ_UNIT)

    def render(self) -> str:
        """The lines printed before an import starts (and all ``--dry-run`` prints)."""
        return (f"{self.files} file(s) to import, at most {self.blocks} block(s)\n"
                f"DynamoDB: about {self.write_units} write units and {self.read_units} read units, "
                f"${self.dollars():.2f} (up to ${self.dollars(WORST_UNITS_PER_BLOCK):.2f} "
                f"if every value is a full-precision double)\n")
