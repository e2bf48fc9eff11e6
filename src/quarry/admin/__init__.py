"""Operating Quarry: backups of its state to S3, and restores into an empty place.

- ``backup``: the job database (SQLite through its backup API, PostgreSQL through
  ``pg_dump``), the tracking store (MLflow's database the same way, and its artifact folder)
  and a data store (its Delta tables as of one commit each, even while an ingest runs), to
  ``s3://BUCKET/PREFIX/<UTC start>/``, with ``manifest.json`` (each file's size and SHA-256)
  written last; ``backup_every`` repeats it on a schedule.
- ``restore``: a complete backup (the newest, or the one named) into an empty place, every
  file checked against the manifest before anything is put in place; MLflow's artifact
  locations follow the artifact folder to its new place.
- ``list_backups``: the backups under a prefix, with their time, size and completeness.

Heavy libraries (pyarrow, psycopg, MLflow's settings) are imported inside the functions.
"""

from quarry.admin._backup import backup, backup_every
from quarry.admin._manifest import Manifest, Part
from quarry.admin._restore import BackupInfo, Restored, list_backups, restore
from quarry.admin._s3 import FileEntry

__all__ = [
    "BackupInfo",
    "FileEntry",
    "Manifest",
    "Part",
    "Restored",
    "backup",
    "backup_every",
    "list_backups",
    "restore",
]
