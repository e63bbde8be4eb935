"""The patches the pinned Dapr is built with (deploy/dapr/patches, applied by deploy/install-dapr.sh)."""

import re
from pathlib import Path

from taskfan import versions

PATCHES = Path(__file__).resolve().parents[2] / "deploy" / "dapr" / "patches"


def test_every_patch_names_the_pinned_version_of_its_module():
    # A Dapr upgrade must port or drop each patch: install-dapr.sh refuses one written for another version.
    patches = sorted(PATCHES.glob("*.patch"))
    assert patches
    for patch in patches:
        text = patch.read_text()
        module = re.search(r"^module: (\S+) (\S+)$", text, re.M)
        assert module is not None, f"{patch.name}: no 'module: PATH VERSION' line"
        if module[1] == "github.com/dapr/dapr":
            assert module[2] == f"v{versions.DAPR_VERSION}", patch.name
        assert re.search(r"^\+\+\+ b/\S+\.go$", text, re.M), f"{patch.name}: no file it changes"


def test_the_healthz_patch_makes_the_health_server_bind_the_listen_address_in_every_control_plane_app():
    text = (PATCHES / "healthz-listen-address.patch").read_text()
    changed = set(re.findall(r"^\+\+\+ b/(\S+)$", text, re.M))
    assert changed == {"pkg/healthz/server/server.go", *(f"cmd/{app}/app/app.go" for app in
                                                          ("placement", "scheduler", "sentry", "operator", "injector"))}
    assert "+\tln, err := net.Listen(\"tcp\", net.JoinHostPort(s.listenAddress, strconv.Itoa(s.port)))" in text
