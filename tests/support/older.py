"""An older meshkit, from this repository's own history, to run beside today's (a rolling upgrade).

    old = older_tree(BEFORE_FRAMED_TCP, tmp_path)   # meshkit, presence_server and example_services of then
    mesh.app(LAMBDA_APP, root=old)                  # runs from that tree, on today's virtualenv

The tree is `git archive` of the commit. A clone without that commit (a shallow one) cannot run these tests:
they are skipped, saying so.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from io import BytesIO
from pathlib import Path

import pytest

from tests.support.servers import REPO

#: the last commit before framed TCP: its direct path is the websocket only, and it has the replay stamps,
#: cards and contracts of today (an app from before the stamps cannot join today's mesh: README.md of
#: docs/protocol, "Compatibility and rolling upgrades")
BEFORE_FRAMED_TCP = "2e52cdc38337921b70a50a47bce575d82553fd0d"
#: the last commit before the replay stamps: its signed control messages carry no `ts` and `seq`
BEFORE_REPLAY_STAMPS = "43e030de9045313d69d48d6bb0d9a6babf22f46c"
PACKAGES = ("meshkit", "presence_server", "example_services")


def older_tree(commit: str, into: Path) -> Path:
    """The packages of `commit`, extracted into `into` (skips the test without git or the commit)."""
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("no git repository here: an older meshkit comes from this repository's history")
    found = subprocess.run([git, "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"], check=False)
    if found.returncode != 0:
        pytest.skip(f"this clone has no commit {commit[:12]} (a shallow clone?): no older meshkit to run")
    archive = subprocess.run(
        [git, "-C", str(REPO), "archive", "--format=tar", commit, *PACKAGES], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later; the archive is our own either way
            tar.extractall(into, filter="data")
        else:
            tar.extractall(into)
    return into
