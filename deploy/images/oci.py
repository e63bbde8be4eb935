"""Pack root file system trees into an OCI image archive, without Docker or a registry.

    python3 deploy/images/oci.py ROOTFS OUT.tar --name localhost/taskfan/app:0.1.0 [--layer DIR ...] \
        [--entrypoint /usr/bin/python3 -m x | --entrypoint '["/usr/bin/python3", "-m", "x"]'] [--cmd ...] \
        [--user 65532:65532] [--env K=V] [--workdir /app] [--owner 0] [--layer-cache DIR]

One layer per tree (ROOTFS at the bottom, each ``--layer`` above it, in order; owners and modes as they
are on disk unless ``--owner`` rewrites them), an image config, a manifest, and ``index.json`` with the
``io.containerd.image.name`` annotation, so that ``ctr -n k8s.io images import OUT.tar`` tags it, and
``skopeo``/``crane`` can push it to a registry. The layers' file times are clamped to SOURCE_DATE_EPOCH
(default 0), so one tree gives one digest. An upper tree may hold overlayfs whiteouts (0/0 character
devices, opaque directories); they become OCI whiteouts. Sockets are left out.

With ``--layer-cache DIR``, a packed layer is kept under DIR, named by a fingerprint of its tree (every
entry's path, type, mode, owner, size, times, link target), and reused while the tree is unchanged: a
large base tree is compressed once. A cached layer's file time is the last time it was used, so that old ones
can be pruned by age (deploy/images/build.sh does).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import IO, Any

MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# Bumped whenever the bytes a tree packs to change for the same tree, so that old cached layers are unused.
LAYER_FORMAT = "2"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class _HashingWriter:
    """A write-only file that hashes what passes through it and counts it (tarfile asks for tell())."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink, self.sha, self.size = sink, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.sink.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.sink.flush()


def _ordered(rootfs: Path) -> list[Path]:
    """Every path under rootfs, parents before children, in a stable order; symlinked dirs not followed."""
    paths = []
    for directory, dirs, files in os.walk(rootfs):
        paths.extend(Path(directory, name) for name in (*dirs, *files))
    return sorted(paths, key=lambda p: p.relative_to(rootfs).parts)


def _is_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def fingerprint(rootfs: Path, epoch: int, owner: int | None) -> str:
    """A digest of everything about the tree that the packed layer depends on (not the file contents:
    a file rewritten in place with the same size within the same nanosecond would not be noticed)."""
    sha = hashlib.sha256(f"{LAYER_FORMAT} {epoch} {owner}\n".encode())
    for path in _ordered(rootfs):
        st = os.lstat(path)
        link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
        rel = path.relative_to(rootfs).as_posix()
        sha.update(f"{rel}\0{st.st_mode}\0{st.st_uid}\0{st.st_gid}\0{st.st_size}\0{st.st_mtime_ns}\0"
                   f"{st.st_rdev}\0{st.st_nlink}\0{link}\0{_is_opaque(path)}\n".encode())
    return sha.hexdigest()


def write_layer(rootfs: Path, sink: IO[bytes], epoch: int, owner: int | None) -> tuple[str, str, int]:
    """Write the gzipped layer of the tree to sink; returns its diff id (sha256 of the uncompressed tar),
    its digest (sha256 of the gzip) and its compressed size."""
    gz_out = _HashingWriter(sink)
    with gzip.GzipFile(fileobj=gz_out, mode="wb", mtime=0, compresslevel=6) as gz:  # type: ignore[arg-type]
        raw = _HashingWriter(gz)  # type: ignore[arg-type]
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for path in _ordered(rootfs):
                _add(tar, rootfs, path, epoch, owner)
    return "sha256:" + raw.sha.hexdigest(), "sha256:" + gz_out.sha.hexdigest(), gz_out.size


def _add(tar: tarfile.TarFile, rootfs: Path, path: Path, epoch: int, owner: int | None) -> None:
    arcname = path.relative_to(rootfs).as_posix()
    info = tar.gettarinfo(str(path), arcname=arcname)
    if info is None:  # a socket: nothing an image can carry
        sys.stderr.write(f"oci.py: leaving out socket {arcname}\n")
        return
    info.mtime = min(int(info.mtime), epoch) if epoch else 0
    info.uname = info.gname = ""
    if owner is not None:
        info.uid = info.gid = owner
    if info.ischr() and info.devmajor == 0 and info.devminor == 0:  # overlayfs whiteout: the file is deleted
        parent = path.parent.relative_to(rootfs).as_posix()
        info = tarfile.TarInfo(f"{WHITEOUT}{path.name}" if parent == "." else f"{parent}/{WHITEOUT}{path.name}")
        info.mtime, info.mode = 0, 0o644
        tar.addfile(info)
        return
    if info.isreg():
        with open(path, "rb") as data:
            tar.addfile(info, data)
    else:
        tar.addfile(info)
    if info.isdir() and _is_opaque(path):  # overlayfs opaque dir: hides everything below it in lower layers
        marker = tarfile.TarInfo(f"{arcname}/{OPAQUE}")
        marker.mtime, marker.mode = 0, 0o644
        tar.addfile(marker)


def layer(rootfs: Path, workdir: Path, epoch: int, owner: int | None,
          cache: Path | None) -> tuple[Path, dict[str, Any], bool]:
    """The gzipped layer of a tree as a file, with {diff_id, digest, size}, and whether it came from cache.
    Without a cache, the file is a temporary one in workdir that the caller removes."""
    key = fingerprint(rootfs, epoch, owner) if cache else ""
    if cache:
        blob_path, meta_path = cache / f"{key}.tar.gz", cache / f"{key}.json"
        if blob_path.is_file() and meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if blob_path.stat().st_size == meta["size"]:
                for used in (blob_path, meta_path):  # its time says when it was last used (for pruning)
                    os.utime(used)
                return blob_path, meta, True
    fd, tmp_name = tempfile.mkstemp(dir=cache or workdir, suffix=".layer.tmp")
    try:
        with os.fdopen(fd, "wb") as sink:
            diff_id, digest, size = write_layer(rootfs, sink, epoch, owner)
    except BaseException:
        os.unlink(tmp_name)
        raise
    meta = {"diff_id": diff_id, "digest": digest, "size": size}
    if not cache:
        return Path(tmp_name), meta, False
    os.chmod(tmp_name, 0o644)
    os.replace(tmp_name, cache / f"{key}.tar.gz")
    (cache / f"{key}.json").write_text(json.dumps(meta))
    return cache / f"{key}.tar.gz", meta, False


def _add_bytes(out: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    out.addfile(info, io.BytesIO(data))


def _add_dir(out: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    out.addfile(info)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _index_of(archive: Path) -> bytes | None:
    """The index.json of an existing archive (None if there is none or it cannot be read)."""
    try:
        with tarfile.open(archive, mode="r:") as tar:
            member = tar.extractfile("index.json")
            return member.read() if member else None
    except (OSError, tarfile.TarError, KeyError):
        return None


def parse_argv_list(values: list[str]) -> list[str]:
    """`--entrypoint a b` or, for arguments that start with '-', one JSON array: `--entrypoint '["a", "-b"]'`."""
    if len(values) == 1 and values[0].lstrip().startswith("["):
        parsed = json.loads(values[0])
        if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
            raise ValueError(f"not a JSON array of strings: {values[0]}")
        return parsed
    return values


def pack(rootfs: Path | list[Path], archive: Path, name: str, *, entrypoint: list[str], cmd: list[str], user: str,
         env: list[str], workdir: str, owner: int | None = None, layer_cache: Path | None = None) -> str:
    """Write the archive (one layer per tree, the first at the bottom); returns the manifest digest."""
    trees = rootfs if isinstance(rootfs, list) else [rootfs]
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    archive.parent.mkdir(parents=True, exist_ok=True)
    if layer_cache:
        layer_cache.mkdir(parents=True, exist_ok=True)
    layers = [layer(tree, archive.parent, epoch, owner, layer_cache) for tree in trees]
    try:
        path_env = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        config = {
            "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
            "os": "linux",
            "config": {"Entrypoint": entrypoint or None, "Cmd": cmd or None, "User": user,
                       "Env": [*([] if any(e.startswith("PATH=") for e in env) else [path_env]), *env],
                       "WorkingDir": workdir},
            "rootfs": {"type": "layers", "diff_ids": [meta["diff_id"] for _, meta, _ in layers]},
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        layer_refs = [{"mediaType": MEDIA_LAYER, "digest": meta["digest"], "size": meta["size"]}
                      for _, meta, _ in layers]
        config_ref = {"mediaType": MEDIA_CONFIG, "digest": _sha256(config_bytes), "size": len(config_bytes)}
        manifest_bytes = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "config": config_ref,
                                     "layers": layer_refs}, sort_keys=True).encode()
        manifest_ref = {"mediaType": MEDIA_MANIFEST, "digest": _sha256(manifest_bytes), "size": len(manifest_bytes),
                        "annotations": {"io.containerd.image.name": name,
                                        "org.opencontainers.image.ref.name": _tag(name)}}
        index_bytes = json.dumps({"schemaVersion": 2, "manifests": [manifest_ref]}).encode()
        if _index_of(archive) == index_bytes:  # the same image under the same name is there already
            return str(manifest_ref["digest"])
        fd, tmp_name = tempfile.mkstemp(dir=archive.parent, suffix=".oci.tmp")
        try:
            with os.fdopen(fd, "wb") as tmp, tarfile.open(fileobj=tmp, mode="w") as out:
                for directory in ("blobs", "blobs/sha256"):
                    _add_dir(out, directory)
                seen: set[str] = set()
                for path, meta, _ in layers:
                    if meta["digest"] in seen:  # the same tree twice: one blob
                        continue
                    seen.add(meta["digest"])
                    info = tarfile.TarInfo(f"blobs/sha256/{meta['digest'].split(':', 1)[1]}")
                    info.size, info.mode = meta["size"], 0o644
                    with open(path, "rb") as data:
                        out.addfile(info, data)
                for data in (config_bytes, manifest_bytes):
                    _add_bytes(out, f"blobs/sha256/{_sha256(data).split(':', 1)[1]}", data)
                _add_bytes(out, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
                _add_bytes(out, "index.json", index_bytes)
            os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600: other users (a registry pusher) may read it
            os.replace(tmp_name, archive)
        except BaseException:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise
    finally:
        for path, _, cached in layers:
            if not layer_cache and not cached:
                path.unlink(missing_ok=True)
    return str(manifest_ref["digest"])


def _tag(name: str) -> str:
    """The tag of an image name (`latest` if it has none); a registry's port is not a tag."""
    last = name.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("rootfs", type=Path, help="the tree that becomes the image's bottom layer")
    parser.add_argument("archive", type=Path, help="the OCI archive to write")
    parser.add_argument("--name", required=True, help="image name with tag, e.g. localhost/taskfan/app:0.1.0")
    parser.add_argument("--layer", type=Path, action="append", default=[], help="a tree for one more layer, on top")
    parser.add_argument("--entrypoint", nargs="*", default=[], help="words, or one JSON array")
    parser.add_argument("--cmd", nargs="*", default=[], help="words, or one JSON array")
    parser.add_argument("--user", default="65532:65532", help="numeric, so runAsNonRoot can check it")
    parser.add_argument("--env", action="append", default=[], help="K=V, repeatable")
    parser.add_argument("--workdir", default="/")
    parser.add_argument("--owner", type=int, default=None, help="rewrite every file's uid/gid to this")
    parser.add_argument("--layer-cache", type=Path, default=None, help="keep and reuse packed layers here")
    args = parser.parse_args(argv)
    for tree in (args.rootfs, *args.layer):
        if not tree.is_dir():
            parser.error(f"{tree} is not a directory")
    try:
        entrypoint, cmd = parse_argv_list(args.entrypoint), parse_argv_list(args.cmd)
    except ValueError as error:
        parser.error(str(error))
    digest = pack([args.rootfs, *args.layer], args.archive, args.name, entrypoint=entrypoint, cmd=cmd,
                  user=args.user, env=args.env, workdir=args.workdir, owner=args.owner, layer_cache=args.layer_cache)
    sys.stdout.write(f"{args.archive} {args.name} {digest}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
