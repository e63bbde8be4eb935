import stat

import pytest

from taskfan import stack_secrets
from taskfan.stack_secrets import StackSecrets


def test_a_stack_gets_its_own_secrets_once_owner_only(tmp_path):
    created = stack_secrets.ensure(tmp_path)
    assert all(len(value) >= 32 for value in created.as_secret_store().values())
    assert stack_secrets.ensure(tmp_path) == created  # kept by `down`, reused by the next `up`
    assert stat.S_IMODE(stack_secrets.path(tmp_path).stat().st_mode) == 0o600
    assert stat.S_IMODE(stack_secrets.path(tmp_path).parent.stat().st_mode) == 0o700


def test_a_stack_with_security_off_has_no_secrets_and_never_shares_a_run_dir_with_a_locked_one(tmp_path):
    locked, unlocked = tmp_path / "locked", tmp_path / "unlocked"
    assert stack_secrets.ensure(unlocked, locked=False) == StackSecrets.none()
    stack_secrets.ensure(locked)
    with pytest.raises(ValueError, match="RUN_DIR"):
        stack_secrets.ensure(locked, locked=False)
    with pytest.raises(ValueError, match="RUN_DIR"):
        stack_secrets.ensure(unlocked)
