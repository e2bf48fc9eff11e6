"""Fast point-in-time reads of a large keyed table, without a sort or a hash join.

A table's files come from commits. Quarry writes every commit in key order, so the files of
a commit are sorted runs. The *spine* is a set of commits whose key ranges do not overlap
(typically the bulk history); the other visible commits are *patches* (corrections and
appends). When every patch is newer than the spine, the answer is the spine's files
concatenated in key order, with each corrected row's values written over the old ones in
place and new keys (appended days) inserted by one gather. Anything else (patches that
outweigh the spine) takes the general path: a group-wise "latest version" and a sort.

A commit's rows may carry knowledge times of their own (history whose rows became known one
by one): a file then spans a range of knowledge times, rows known after ``as_of`` are
filtered out, and when a patch is not wholly newer than the spine, each patched row is
compared with the spine row it would replace (the newer one wins).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
from deltalake import DeltaTable

from quarry.data._order import sort_by_key
from quarry.data._schemas import DELETED, KT, KT_DTYPE, VERSION, TableSpec
from quarry.data._steps import locate
from quarry.data._store import Store, commits_of
from quarry.data._times import key_bound

__all__ = ["read_latest"]


def read_latest(
    store: Store,
    spec: TableSpec,
    columns: Sequence[str],
    predicate: pl.Expr | None,
    as_of: datetime | None,
    between: tuple[Any, Any] | None = None,
) -> pl.DataFrame:
    """Rows of ``spec`` known at ``as_of`` (one per key), filtered, in key order.

    ``between`` bounds the second key column (a date or time range, either end None for
    open; a date bounds a time column by the whole day); unlike a predicate it costs nothing
    on files whose statistics show them fully inside. ``spec`` gives the table: its bars are
    read as the store keeps them, daily or intraday.
    """
    columns = list(dict.fromkeys([*spec.key, *columns]))
    dt = store.table(spec.name)
    if dt is None:
        return pl.DataFrame(schema={c: spec.schema()[c] for c in columns})
    spec = store.spec(spec.name, dt)
    if between is not None:
        timed = spec.schema()[spec.key[1]] != pl.Date
        between = (key_bound(between[0], timed, False), key_bound(between[1], timed, True))
    fast = _fast_path(store, spec, dt, columns, predicate, as_of, between)
    if fast is not None:
        return fast
    lf = store.scan(spec.name, as_of=as_of, dt=dt)
    assert lf is not None
    where = _and(predicate, _between(spec.key[1], between))
    if where is not None:
        lf = lf.filter(where)
    return sort_by_key(lf.select(columns).collect(), spec.key)


def _between(column: str, bounds: tuple[Any, Any] | None) -> pl.Expr | None:
    if bounds is None:
        return None
    lo, hi = bounds
    parts = [
        e
        for e in (lo is not None and pl.col(column) >= lo, hi is not None and pl.col(column) <= hi)
        if e is not False
    ]
    return pl.all_horizontal(parts) if parts else None


def _and(*exprs: pl.Expr | None) -> pl.Expr | None:
    real = [e for e in exprs if e is not None]
    return pl.all_horizontal(real) if real else None


def _files(store: Store, spec: TableSpec, dt: DeltaTable, as_of: datetime | None) -> pl.DataFrame:
    """One row per visible data file: uri, rows, key range of its first key column, commit."""
    k0, k1 = spec.key[0], spec.key[1]
    uris = dt.file_uris()
    # Through the Arrow stream interface: pa.table() of it would import pandas (0.2 s).
    acts = pl.DataFrame(dt.get_add_actions(flatten=True))
    by_name = {u.rsplit("/", 1)[-1]: u for u in uris}
    files = acts.select(
        pl.col("path")
        .str.split("/")
        .list.last()
        .replace_strict(by_name, default=None, return_dtype=pl.String)
        .alias("uri"),
        pl.col("num_records").alias("rows"),
        pl.col(f"min.{k0}").alias("lo"),
        pl.col(f"max.{k0}").alias("hi"),
        pl.col(f"min.{k1}").alias("lo1"),
        _widened(pl.col(f"max.{k1}"), spec.schema()[k1]).alias("hi1"),
        # Delta keeps times to the millisecond, rounded down: the bounds are widened to hold
        # every row's own time (so kt is at or before the first, kt_hi after the last).
        pl.col(f"min.{KT}").cast(KT_DTYPE).alias("kt"),
        (pl.col(f"max.{KT}").cast(KT_DTYPE) + pl.duration(milliseconds=1)).alias("kt_hi"),
        pl.col(f"min.{VERSION}").alias("version"),
    )
    if as_of is not None:
        files = files.filter(pl.col("kt") <= as_of)
    return files


def _widened(bound: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """An upper bound from Delta's statistics, which keep times to the millisecond, rounded
    down: widened to hold every row's own time."""
    return bound + pl.duration(milliseconds=1) if isinstance(dtype, pl.Datetime) else bound


def _fast_path(
    store: Store,
    spec: TableSpec,
    dt: DeltaTable,
    columns: list[str],
    predicate: pl.Expr | None,
    as_of: datetime | None,
    between: tuple[Any, Any] | None,
) -> pl.DataFrame | None:
    if len(spec.key) != 2 or spec.semantics != "upsert":
        return None
    files = _files(store, spec, dt, as_of)
    if files.height == 0 or files.select(pl.any_horizontal(pl.all().is_null()).any()).item():
        return None  # no files, or missing statistics: nothing to plan with
    commits = (
        files.group_by("version")
        .agg(
            pl.col("rows").sum(),
            pl.col("lo").min(),
            pl.col("hi").max(),
            pl.col("kt").min(),
            pl.col("kt_hi").max(),
        )
        .sort("rows", descending=True)
    )
    spine: list[dict[str, Any]] = []
    patches: list[dict[str, Any]] = []
    for c in commits.iter_rows(named=True):
        clear = all(c["hi"] < s["lo"] or c["lo"] > s["hi"] for s in spine)
        (spine if clear else patches).append(c)
    # Whether a patch row may be older than the spine row of its key: then each patched row
    # is compared with the one it would replace (reading the spine's knowledge times).
    compare = False
    if patches:
        newest_spine = max((s["kt_hi"], s["version"]) for s in spine)
        oldest_patch = min((p["kt"], p["version"]) for p in patches)
        compare = oldest_patch <= newest_spine
        # Patches that outweigh the spine are better resolved by one sort.
        if sum(int(p["rows"]) for p in patches) > sum(int(s["rows"]) for s in spine):
            return None
    spine_versions = [s["version"] for s in spine]
    retracting = {c.version for c in commits_of(spec.name, dt) if c.retracted}
    if retracting & set(spine_versions):
        return None  # a bulk commit with retractions: resolve it the general way
    spine_files = files.filter(pl.col("version").is_in(spine_versions)).sort("lo", "hi", "version")
    opts = store.location.storage_options or None

    k0, k1 = spec.key
    lo1, hi1 = between if between is not None else (None, None)
    in_range = _between(k1, between)
    known = pl.col(KT) <= as_of if as_of is not None else None

    def scan(uris: list[str], cols: list[str], where: pl.Expr | None) -> pl.LazyFrame:
        lf = pl.scan_parquet(uris, storage_options=opts, hive_partitioning=False)
        return (lf.filter(where) if where is not None else lf).select(cols)

    scans = []
    versions: list[int] = []
    for f in spine_files.iter_rows(named=True):
        if (lo1 is not None and f["hi1"] < lo1) or (hi1 is not None and f["lo1"] > hi1):
            continue  # the whole file is outside the range
        inside = (lo1 is None or f["lo1"] >= lo1) and (hi1 is None or f["hi1"] <= hi1)
        # Rows known one by one: those known after as_of are left out.
        later = known if as_of is not None and f["kt_hi"] > as_of else None
        # A filter copies every column even when it keeps all rows: skip it when it would.
        where = _and(predicate, None if inside else in_range, later)
        scans.append(scan([f["uri"]], [*columns, KT] if compare else columns, where))
        versions.append(int(f["version"]))
    collected = pl.collect_all(scans) if scans else []
    kept = [i for i, f in enumerate(collected) if f.height]
    frames = [collected[i] for i in kept]
    versions = [versions[i] for i in kept]
    del collected
    if not _in_order(frames, k0, k1):
        return None  # runs out of order: not written by a sorted commit
    if patches:
        patch_uris = files.filter(~pl.col("version").is_in(spine_versions))["uri"].to_list()
        patch = (
            scan(patch_uris, [*columns, KT, VERSION, DELETED], _and(predicate, in_range, known))
            .sort([k0, k1, KT, VERSION])
            .unique([k0, k1], keep="last", maintain_order=True)
            .collect()
        )
        if compare:
            spine_kt = [f[KT].to_physical().to_numpy() for f in frames]
            frames = [f.drop(KT) for f in frames]
            patch = _newer_than_spine(frames, spine_kt, versions, patch, spec)
            del spine_kt
        if patch.height:
            if not frames:
                return patch.filter(~pl.col(DELETED)).select(columns)
            return _apply_patch(frames, patch, spec, columns)
    if not frames:
        return pl.DataFrame(schema={c: spec.schema()[c] for c in columns})
    return pl.concat(frames, how="vertical", rechunk=False)


def _newer_than_spine(
    frames: list[pl.DataFrame],
    spine_kt: list[np.ndarray],
    versions: list[int],
    patch: pl.DataFrame,
    spec: TableSpec,
) -> pl.DataFrame:
    """The patch rows that win over the spine row of their key (a later knowledge time, or
    the same one and a later commit); rows of keys the spine lacks all stay."""
    if not frames or patch.height == 0:
        return patch
    k0, k1 = spec.key
    heights = np.array([f.height for f in frames], dtype=np.int64)
    starts = np.cumsum(heights) - heights
    pos, found = locate(pl.concat(frames, how="vertical", rechunk=False), patch, k0, k1)
    at = np.nonzero(found)[0]
    owner = np.searchsorted(starts, pos[at], side="right") - 1
    old_kt = np.empty(at.size, dtype=np.int64)
    for i in np.unique(owner):
        mine = owner == i
        old_kt[mine] = spine_kt[i][pos[at[mine]] - starts[i]]
    old_version = np.asarray(versions, dtype=np.int64)[owner]
    new_kt = patch[KT].to_physical().to_numpy()[at]
    new_version = patch[VERSION].to_numpy()[at]
    older = (new_kt < old_kt) | ((new_kt == old_kt) & (new_version < old_version))
    if not older.any():
        return patch
    keep = np.ones(patch.height, dtype=bool)
    keep[at[older]] = False
    return patch.filter(pl.Series(keep))


def _in_order(frames: list[pl.DataFrame], k0: str, k1: str) -> bool:
    """Whether each frame's last key precedes the next frame's first key.

    A function of its own so that no loop variable outlives the check: a frame still
    referenced elsewhere would be copied, not patched in place, by ``_apply_patch``.
    """
    return all((a[k0][-1], a[k1][-1]) < (b[k0][0], b[k1][0]) for a, b in itertools.pairwise(frames))


def _apply_patch(
    frames: list[pl.DataFrame], patch: pl.DataFrame, spec: TableSpec, columns: list[str]
) -> pl.DataFrame:
    """The spine frames with the patch applied, in key order.

    A patch row whose key the spine has is written over that row in place; the others are
    new keys, inserted at their positions by one gather.
    """
    k0, k1 = spec.key
    values = [c for c in columns if c not in spec.key]
    heights = np.array([f.height for f in frames], dtype=np.int64)
    starts = np.cumsum(heights) - heights
    view = pl.concat(frames, how="vertical", rechunk=False)  # shares the frames' buffers
    pos, found = locate(view, patch, k0, k1)
    del view  # a second reference would turn the in-place scatter below into a copy

    retracted = patch[DELETED].to_numpy()
    replace = np.nonzero(found & ~retracted)[0]
    owner = np.searchsorted(starts, pos[replace], side="right") - 1
    for i in np.unique(owner):
        mine = replace[owner == i]
        at = pos[mine] - starts[i]
        frame = frames[i]
        frames[i] = None  # type: ignore[call-overload]
        cols = frame.get_columns()
        del frame
        new = patch[mine]
        for s in cols:
            if s.name in values:
                s.scatter(at, new[s.name])
        frames[i] = pl.DataFrame(cols)

    insert = np.nonzero(~found & ~retracted)[0]
    remove = pos[np.nonzero(found & retracted)[0]]
    if insert.size == 0 and remove.size == 0:
        return pl.concat(frames, how="vertical", rechunk=False)
    # New keys go in at their positions and retracted rows are left out: slices of the spine
    # (zero-copy) alternate with runs of new rows, and one concatenation copies all once.
    view = pl.concat(frames, how="vertical", rechunk=False)
    new = patch[insert].select(columns)
    at = pos[insert]
    cuts = np.flatnonzero(np.diff(at)) + 1  # runs of inserts sharing a position
    # (position, 0: insert the run [a, b) of new rows before it | 1: leave its row out, a, b)
    events = [
        (int(at[a]), 0, int(a), int(b))
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, at.size], strict=True)
        if at.size
    ] + [(int(p), 1, 0, 0) for p in remove]
    pieces: list[pl.DataFrame] = []
    done = 0
    for p, kind, a, b in sorted(events):
        pieces.append(view.slice(done, p - done))
        if kind == 0:
            pieces.append(new.slice(a, b - a))
            done = p
        else:
            done = p + 1
    pieces.append(view.slice(done, view.height - done))
    return pl.concat(pieces, how="vertical", rechunk=True)
