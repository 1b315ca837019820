"""``python -m ser_ssl.data.cache_admin``: what a feature cache holds on disk, and deleting the
manifests that no run has used for some days (a run that needs one again builds it again)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from ser_ssl.data.cache import CacheEntry, cache_entries, prune
from ser_ssl.experiments import console


def _table(entries: Sequence[CacheEntry], cache_root: Path) -> str:
    rows = []
    for e in entries:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
        what = "unfinished builds" if e.clips is None else f"{e.clips} clips"
        rows.append(f"{e.size / 2**20:10.1f} MB  {used}  {what:>17}  {e.path.relative_to(cache_root)}")
    total = sum(e.size for e in entries) / 2**20
    return "\n".join([*rows, f"{total:10.1f} MB  in {len(entries)} entries"])


def main(argv: list[str] | None = None) -> None:
    """``python -m ser_ssl.data.cache_admin list|prune``: what a feature cache holds, and deleting what no
    run has used for a while."""
    parser = argparse.ArgumentParser(
        prog="python -m ser_ssl.data.cache_admin",
        description="List the feature cache, or delete the manifests no run has used for some days.",
    )
    parser.add_argument("command", choices=["list", "prune"])
    parser.add_argument("--cache-dir", default="cache", type=Path, help="the cache folder (default: cache)")
    parser.add_argument(
        "--older-than", type=float, metavar="DAYS", help="prune: what no run has used for DAYS days"
    )
    parser.add_argument("--dry-run", action="store_true", help="prune: list what would be deleted")
    args = parser.parse_args(argv)
    if args.command == "list":
        print(_table(cache_entries(args.cache_dir), args.cache_dir))
        return
    if args.older_than is None or args.older_than < 1:
        parser.error("prune needs --older-than DAYS, at least 1 (runs mark what they read hourly)")
    gone = prune(args.cache_dir, args.older_than, args.dry_run)
    print(("would delete" if args.dry_run else "deleted") + ":\n" + _table(gone, args.cache_dir))


if __name__ == "__main__":
    console(main, "python -m ser_ssl.data.cache_admin")
