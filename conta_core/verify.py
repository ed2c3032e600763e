"""Check every artifact of a results folder now, before a run reads it.

    python -m conta_core.verify results/<run> [--keep]

Snakemake plans from modification times, so a file damaged without a newer time (bit
rot, a copy that kept times) is found only when a later job reads it. This reads every
HDF5 artifact (each item and attribute against its CRC-32) and every model file and
training checkpoint (against its SHA-256), deletes the damaged ones (unless ``--keep``),
and prints one line per damaged file; the next ``snakemake`` then plans their rebuild
in the same run. Exit status 1 when anything was damaged. Files of another format
(not made by this workflow) are listed as skipped, never deleted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .integrity import DamagedArtifact


def check_file(path: Path, *, remove: bool) -> str | None:
    """None when ``path`` is intact; the reason when it is damaged (and deleted if ``remove``)."""
    try:
        if path.suffix == ".h5":
            from .store import MapReader

            with MapReader(path, remove_damaged=remove) as reader:
                reader.check_layout()
                for image_id in reader.ids():
                    reader.get(image_id)
                    reader.item_attrs(image_id)
                for name in (reader.attrs.get("arrays_crc32") or {}):
                    reader.array(name)
        else:
            from .checkpoint import load_model_file

            load_model_file(path, remove_damaged=remove)
    except DamagedArtifact as err:
        return err.reason
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="a results folder (results/<run>) or any folder below it")
    p.add_argument("--keep", action="store_true", help="report damaged files without deleting them")
    args = p.parse_args(argv)
    if not args.folder.is_dir():
        p.error(f"{args.folder} is not a folder")
    from .store import StoreError

    files = sorted(f for f in args.folder.rglob("*") if f.is_file() and f.suffix in (".h5", ".pt"))
    damaged = skipped = 0
    for path in files:
        try:
            reason = check_file(path, remove=not args.keep)
        except StoreError as err:  # another format or kind: not ours to judge
            print(f"skipped  {path}: {err}")
            skipped += 1
            continue
        if reason is not None:
            damaged += 1
            print(f"damaged  {path}: {reason}; {'kept' if args.keep else 'deleted'}")
    print(f"{len(files)} file(s) checked: {damaged} damaged, {skipped} skipped"
          + ("" if args.keep or not damaged else "; rerun snakemake to rebuild the deleted ones"))
    return 1 if damaged else 0


if __name__ == "__main__":
    sys.exit(main())
