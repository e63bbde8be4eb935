"""Pack a root file system into an OCI image archive, without Docker or a registry.

    python3 deploy/images/oci.py ROOTFS OUT.tar --name taskfan/app:0.1.0 \
        [--entrypoint /usr/bin/python3 -m x] [--cmd ...] [--user 65532] [--env K=V] [--workdir /app]

One layer (the whole tree, owners and modes as they are on disk unless ``--owner`` rewrites them), an
image config, a manifest, and ``index.json`` with the ``io.containerd.image.name`` annotation, so that
``ctr -n k8s.io images import OUT.tar`` tags it, and ``skopeo``/``crane`` can push it to a registry.
The layer's file times are clamped to SOURCE_DATE_EPOCH (default 0), so one tree gives one digest.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path

MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def layer(rootfs: Path, epoch: int, owner: int | None) -> tuple[bytes, str]:
    """The gzipped layer and the sha256 of its uncompressed tar (the image's diff id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(rootfs.rglob("*"), key=lambda p: p.relative_to(rootfs).as_posix()):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(rootfs).as_posix())
            info.mtime = min(int(info.mtime), epoch) if epoch else 0
            info.uname = info.gname = ""
            if owner is not None:
                info.uid = info.gid = owner
            if info.isreg():
                with open(path, "rb") as data:
                    tar.addfile(info, data)
            else:
                tar.addfile(info)
    tar_bytes = raw.getvalue()
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0, compresslevel=6) as gz:
        gz.write(tar_bytes)
    return compressed.getvalue(), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def blob(out: tarfile.TarFile, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size, info.mode = len(data), 0o644
    out.addfile(info, io.BytesIO(data))
    return {"digest": f"sha256:{digest}", "size": len(data)}


def pack(rootfs: Path, archive: Path, name: str, *, entrypoint: list[str], cmd: list[str], user: str,
         env: list[str], workdir: str, owner: int | None = None) -> str:
    """Write the archive; returns the manifest digest."""
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    layer_gz, diff_id = layer(rootfs, epoch, owner)
    config = {
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
        "os": "linux",
        "config": {"Entrypoint": entrypoint or None, "Cmd": cmd or None, "User": user,
                   "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *env],
                   "WorkingDir": workdir},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=archive.parent, delete=False) as tmp, \
            tarfile.open(fileobj=tmp, mode="w") as out:
        layer_ref = {"mediaType": MEDIA_LAYER, **blob(out, layer_gz)}
        config_ref = {"mediaType": MEDIA_CONFIG, **blob(out, json.dumps(config, sort_keys=True).encode())}
        manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "config": config_ref, "layers": [layer_ref]}
        manifest_ref = {"mediaType": MEDIA_MANIFEST, **blob(out, json.dumps(manifest, sort_keys=True).encode()),
                        "annotations": {"io.containerd.image.name": name,
                                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}}
        for file_name, document in (("oci-layout", {"imageLayoutVersion": "1.0.0"}),
                                    ("index.json", {"schemaVersion": 2, "manifests": [manifest_ref]})):
            data = json.dumps(document).encode()
            info = tarfile.TarInfo(file_name)
            info.size, info.mode = len(data), 0o644
            out.addfile(info, io.BytesIO(data))
    os.replace(tmp.name, archive)
    return str(manifest_ref["digest"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rootfs", type=Path, help="the tree that becomes the image's file system")
    parser.add_argument("archive", type=Path, help="the OCI archive to write")
    parser.add_argument("--name", required=True, help="image name with tag, e.g. taskfan/app:0.1.0")
    parser.add_argument("--entrypoint", nargs="*", default=[])
    parser.add_argument("--cmd", nargs="*", default=[])
    parser.add_argument("--user", default="65532:65532", help="numeric, so runAsNonRoot can check it")
    parser.add_argument("--env", action="append", default=[], help="K=V, repeatable")
    parser.add_argument("--workdir", default="/")
    parser.add_argument("--owner", type=int, default=None, help="rewrite every file's uid/gid to this")
    args = parser.parse_args(argv)
    if not args.rootfs.is_dir():
        parser.error(f"{args.rootfs} is not a directory")
    digest = pack(args.rootfs, args.archive, args.name, entrypoint=args.entrypoint, cmd=args.cmd, user=args.user,
                  env=args.env, workdir=args.workdir, owner=args.owner)
    print(f"{args.archive} {args.name} {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
