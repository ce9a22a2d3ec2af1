"""The public surface: what `meshkit` exports, what each layer's package exports, and what the wheel ships."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

import meshkit

REPO = Path(__file__).resolve().parents[1]

#: what an app author imports from `meshkit`; a change here is a change of the public API
ROOT_API = [
    "Address",
    "AppConfig",
    "AppError",
    "CodecError",
    "ConfigError",
    "EventEnvelope",
    "EventStream",
    "EventStreamWriter",
    "FunctionRegistry",
    "FunctionSpec",
    "Platform",
    "PostOffice",
    "StreamCancelled",
    "SyncEventStream",
    "SyncPostOffice",
    "__version__",
    "create_app",
    "current_platform",
    "decode",
    "encode",
    "install",
    "load_config",
    "route",
]

#: every public package of meshkit (no part of its name starts with `_`), the root included
PACKAGES = [
    *sorted(
        name
        for _, name, is_package in pkgutil.walk_packages(meshkit.__path__, "meshkit.")
        if is_package and not any(part.startswith("_") for part in name.split("."))
    ),
    "meshkit",
]


def test_the_root_exports_exactly_the_app_authors_api() -> None:
    assert meshkit.__all__ == ROOT_API


@pytest.mark.parametrize("name", PACKAGES)
def test_a_package_exports_what_it_defines_and_defines_what_it_exports(name: str) -> None:
    package = importlib.import_module(name)
    exported = list(getattr(package, "__all__", []))
    assert exported, f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(package, n)]
    assert not missing, f"{name}.__all__ names what it does not have: {missing}"
    public = {
        n
        for n, value in vars(package).items()
        if not n.startswith("_") and not isinstance(value, types.ModuleType) and n != "annotations"
    }
    assert public <= set(exported), (
        f"{name} has public names outside __all__: {sorted(public - set(exported))}"
    )


@pytest.mark.parametrize("name", PACKAGES)
def test_each_layer_says_what_it_is(name: str) -> None:
    doc = importlib.import_module(name).__doc__ or ""
    assert doc.strip(), f"{name} has no docstring"
    assert len(doc.strip().splitlines()[0]) <= 110  # one line of role first


async def test_install_needs_no_config_it_reads_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "application.properties").write_text(
        "application.name=installed-here\ninfo.app.version=2.3.4\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    app = FastAPI()

    @app.get("/mine")
    async def mine() -> dict[str, str]:
        return {"mine": "yes"}

    platform = meshkit.install(app)
    assert (platform.name, platform.version) == ("installed-here", "2.3.4")
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as http:
            info = (await http.get("/info")).json()
            assert info["app"]["name"] == "installed-here" and info["origin"] == platform.origin
            assert (await http.get("/mine")).json() == {"mine": "yes"}


def test_load_config_reads_a_directory_under_the_given_properties(tmp_path: Path) -> None:
    (tmp_path / "application.properties").write_text("a.b=file\nc.d=file\n", encoding="utf-8")
    config = meshkit.load_config(tmp_path, {"c.d": "given"})
    assert (config.get("a.b"), config.get("c.d")) == ("file", "given")


def test_the_wheel_ships_meshkit_and_the_monitor_not_the_examples(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("meshkit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"meshkit", "presence_server", wheel.name.split("-py")[0] + ".dist-info"}
    for shipped in (
        "meshkit/py.typed",
        "meshkit/testing/plugin.py",
        "presence_server/application.properties",
        "presence_server/dashboard/page.html",
    ):
        assert shipped in names


def test_the_readme_layout_table_matches_the_tree() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = {line.split("`")[1].rstrip("/") for line in section.splitlines() if line.startswith("| `")}
    missing = sorted(path for path in listed if not (REPO / path).exists())
    assert not missing, f"the README lists paths the tree does not have: {missing}"
    layers = {
        f"meshkit/{p.parent.name}"
        for p in (REPO / "meshkit").glob("*/__init__.py")
        if not p.parent.name.startswith("_")
    }
    modules = {f"meshkit/{p.name}" for p in (REPO / "meshkit").glob("*.py") if not p.name.startswith("_")}
    tops = {p.name for p in REPO.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    covered = listed | {path.split("/")[0] for path in listed}  # a directory listed by a file in it
    unlisted = sorted((layers | modules | tops | {"meshkit/__init__.py", "docs/protocol"}) - covered)
    assert not unlisted, f"the README's layout table leaves out: {unlisted}"


def test_importing_meshkit_loads_no_client_mesh_or_crypto_library_an_app_may_never_use() -> None:
    probe = "import sys, meshkit; print(*sys.modules)"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert "meshkit.http" in loaded  # the probe sees what meshkit loads
    for heavy in ("aiohttp", "websockets", "cryptography", "confluent_kafka", "hazelcast", "meshkit.mesh"):
        assert heavy not in loaded, f"import meshkit loads {heavy}"
