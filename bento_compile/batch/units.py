"""Units of work for the local engine's worker processes: a run of Parquet row groups, or a whole file.

A worker is handed a unit's coordinates, never its rows: it opens the file itself, reads only its row
groups, scores them and writes its own part, so no batch is copied through a pipe. The footers give
each unit's first row (row numbers in errors stay the file's) and its row count (the ETA, and what the
default --workers is decided from). CSV and JSON-lines files cannot be entered in the middle, so each
is one unit.
"""

from __future__ import annotations

from dataclasses import dataclass

from bento_compile.batch.sources import InputSet

UNIT_BATCHES = 4  # consecutive row groups are joined up to this many batches: a unit costs a part file and a hand-off


@dataclass(frozen=True)
class Unit:
    file: int  # the file's index in the InputSet
    row_groups: tuple[int, ...] | None  # Parquet row groups; None: the whole file
    first_row: int  # the unit's first row in its file
    rows: int | None  # from the footer; None for CSV / JSON lines


def plan_units(inputs: InputSet, batch_rows: int) -> list[Unit]:
    """Every file's units, in input order (by file, then by row)."""
    import pyarrow.parquet as pq

    units: list[Unit] = []
    floor = UNIT_BATCHES * batch_rows
    for index, file in enumerate(inputs.files):
        if file.format != "parquet":
            units.append(Unit(index, None, 0, None))
            continue
        with inputs.fs.open_input_file(file.path) as handle:
            metadata = pq.ParquetFile(handle).metadata
        groups: list[int] = []
        start = count = 0
        for group in range(metadata.num_row_groups):
            groups.append(group)
            count += metadata.row_group(group).num_rows
            if count >= floor:
                units.append(Unit(index, tuple(groups), start, count))
                start, groups, count = start + count, [], 0
        if groups or metadata.num_row_groups == 0:  # an empty file still gets its (empty) part
            units.append(Unit(index, tuple(groups), start, count))
    return units
