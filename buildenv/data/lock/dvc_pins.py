"""Datasets pinned by DVC: a `.dvc` file names the bytes, DVC's cache and remote hold them.

A team on DVC keeps its `.dvc` files and remote; `dvc: data/customers.csv.dvc` on a dataset
makes buildenv take the bytes that file pins (its `md5`) from DVC's cache (`.dvc/cache`),
fetching them from the DVC remote (`.dvc/config`'s default remote: a directory or an
`s3://` bucket) with DVC's own data library, `dvc-data` -- nothing of DVC is reimplemented
here but reading the `.dvc` YAML and the remote's url. Everything fetched is checked against its
md5 by DVC (`check`), then hashed by buildenv for the lock like any file, and read through the
gate from the cache, verified against the lock.

Pins of one file (DVC 3, `hash: md5`, and DVC 2's `md5-dos2unix`); directory pins are refused
(BE085).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from buildenv.core.project import Project
from buildenv.data.lock.digests import ContentDigest, StatCache, digest_location
from buildenv.data.storage import Location
from buildenv.data.tables import TableError, require_tables
from buildenv.env.spec import Dataset

# Deferred imports (dvc_data, dvc_objects): DVC's data library is the tables extra's, needed only
# for a dataset pinned by a `.dvc` file.

__all__ = ["DvcPin", "digest_dvc", "dvc_location", "dvc_moved", "read_pin"]


@dataclass(frozen=True)
class DvcPin:
    file: str  # the .dvc file, as the environment names it
    md5: str
    hash_name: str  # "md5" (DVC 3) or "md5-dos2unix" (DVC 2)
    path: str  # the output's path, relative to the .dvc file's directory

    def record(self) -> dict[str, Any]:
        return {"file": self.file, "md5": self.md5, "hash": self.hash_name, "path": self.path}


def read_pin(project: Project, ds: Dataset) -> DvcPin:
    """The pin of `ds.dvc`; TableError BE085 when it is not a single-file DVC pin."""
    assert ds.dvc is not None
    path = project.root / ds.dvc
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TableError("BE085", f"'{ds.dvc}' not found", "run `dvc add` for the data, or "
                         "fix `dvc`") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TableError("BE085", f"'{ds.dvc}' is not readable YAML: "
                         f"{str(exc).splitlines()[0]}") from None
    outs = data.get("outs") if isinstance(data, dict) else None
    if not isinstance(outs, list) or len(outs) != 1 or not isinstance(outs[0], dict):
        raise TableError("BE085", f"'{ds.dvc}' does not pin exactly one output (`outs:`)")
    out = outs[0]
    md5 = out.get("md5")
    if not isinstance(md5, str) or not md5:
        raise TableError("BE085", f"'{ds.dvc}' pins no md5")
    if md5.endswith(".dir"):
        raise TableError("BE085", f"'{ds.dvc}' pins a directory; buildenv reads DVC pins of "
                         "one file", "pin each file with its own `.dvc` file")
    hash_name = "md5" if out.get("hash") == "md5" else "md5-dos2unix"
    return DvcPin(ds.dvc, md5, hash_name, str(out.get("path", "")))


def _remote_url(project: Project) -> str | None:
    """The url of DVC's default remote (`.dvc/config`, then `.dvc/config.local`)."""
    import configparser  # deferred: only a DVC pin reads DVC's config; every lock imports this

    parser = configparser.ConfigParser()
    parser.read([project.root / ".dvc" / "config", project.root / ".dvc" / "config.local"])
    name = parser.get("core", "remote", fallback=None)
    if not name:
        return None
    for section in (f'remote "{name}"', f"'remote \"{name}\"'"):
        if parser.has_section(section):
            url = parser.get(section, "url", fallback=None)
            if url and "://" not in url and not Path(url).is_absolute():
                url = str((project.root / ".dvc" / url).resolve())  # relative to .dvc/
            return url
    return None


def _odb(path: str, hash_name: str, read_only: bool, fs: Any = None) -> Any:
    from dvc_data.hashfile.db import HashFileDB, get_odb  # pants: no-infer-dep (the tables extra)
    from dvc_objects.fs.local import LocalFileSystem  # pants: no-infer-dep (the tables extra)

    if fs is None:
        return get_odb(LocalFileSystem(), path,  # type: ignore[no-untyped-call]
                       hash_name=hash_name, read_only=read_only)
    return HashFileDB(fs, path, hash_name=hash_name, read_only=read_only)


def _remote(url: str, hash_name: str) -> Any:
    """DVC's remote as an object database: DVC 3 keeps md5 objects under `files/md5/`,
    DVC 2 at the root."""
    sub = "files/md5" if hash_name == "md5" else ""
    if url.startswith("s3://"):
        import s3fs  # only for an s3:// remote
        from dvc_objects.fs.base import FileSystem  # pants: no-infer-dep (the tables extra)

        class S3(FileSystem):  # dvc-s3 would pull in the whole of DVC: s3fs suffices
            protocol = "s3"
            PARAM_CHECKSUM = "etag"

        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        fs = S3(fs=s3fs.S3FileSystem(endpoint_url=endpoint) if endpoint else s3fs.S3FileSystem())
        return _odb(f"{url[len('s3://'):].rstrip('/')}/{sub}".rstrip("/"), hash_name, True, fs)
    return _odb(str(Path(url) / sub) if sub else url, hash_name, True)


def dvc_location(project: Project, ds: Dataset, uri: str) -> Location:
    """The local path of the bytes `ds.dvc` pins (in DVC's cache, fetched from its remote
    when missing and checked by DVC); TableError BE085/BE086. Messages name `uri`."""
    require_tables(f"dataset '{ds.uri}' (dvc)")
    pin = read_pin(project, ds)
    from dvc_data.hashfile.hash_info import HashInfo  # pants: no-infer-dep (the tables extra)
    from dvc_data.hashfile.transfer import transfer  # pants: no-infer-dep (the tables extra)
    from dvc_objects.errors import ObjectFormatError  # pants: no-infer-dep (the tables extra)

    sub = "files/md5" if pin.hash_name == "md5" else ""
    cache = _odb(str(project.root / ".dvc" / "cache" / sub), pin.hash_name, False)
    if not cache.exists(pin.md5):
        url = _remote_url(project)
        if url is None:
            raise TableError("BE086", f"'{ds.dvc}': object {pin.md5} is not in the DVC cache "
                             "and no DVC remote is configured", "run `dvc pull`, or set a "
                             "default remote (`dvc remote add -d`)")

        def missing(status: Any) -> None:
            if status.missing:
                raise TableError("BE086", f"'{ds.dvc}': DVC remote '{url}' has no object "
                                 f"{pin.md5}", "run `dvc push` where the data was added")

        try:
            transfer(_remote(url, pin.hash_name), cache, {HashInfo(pin.hash_name, pin.md5)},
                     shallow=False, verify=True, validate_status=missing)
        except TableError:
            raise
        except Exception as exc:
            raise TableError("BE086", f"'{ds.dvc}': cannot fetch {pin.md5} from DVC remote "
                             f"'{url}': {str(exc).splitlines()[0] if str(exc) else exc}") \
                from None
    try:
        cache.check(pin.md5, check_hash=True)  # a damaged object is removed by DVC
    except (ObjectFormatError, FileNotFoundError):
        raise TableError("BE086", f"'{ds.dvc}': object {pin.md5} is damaged or missing in the "
                         "DVC cache", "run `dvc pull` (or `dvc fetch`) again") from None
    path = Path(cache.oid_to_path(pin.md5))
    return Location(uri, str(path), str(path), path)


def digest_dvc(project: Project, ds: Dataset, algorithm: str, cache: StatCache | None
               ) -> tuple[ContentDigest, dict[str, Any]]:
    """(digest of the pinned bytes, the pin's record) for the lock."""
    pin = read_pin(project, ds)
    location = dvc_location(project, ds, ds.uri)
    return digest_location(location, ds.format, algorithm, cache), pin.record()


def dvc_moved(project: Project, ds: Dataset, pinned: Any) -> str | None:
    """What changed when the `.dvc` file now pins other bytes than the lock, else None."""
    try:
        now = read_pin(project, ds)
    except TableError as exc:
        return exc.message
    locked = (pinned.dvc or {}).get("md5")
    if now.md5 == locked:
        return None
    return f"'{ds.dvc}' now pins md5 {now.md5}, the lock md5 {locked}"
