"""The Hugging Face Hub, offline: a model in huggingface-hub's cache loads by its id like its folder, a push
(through a fake Hub that commits into that cache) pulls back, and without the extra the error says what to
install. No test reaches the network: sockets refuse to connect and the Hub client runs offline."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import ser_ssl
from ser_ssl import hub
from ser_ssl.cli import exit_on_user_error
from ser_ssl.pretrained import export
from ser_ssl.tasks.checkpoint import CheckpointError
from tests.test_pretrained_export import ENCODERS, pretraining_checkpoint


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("a test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("hub")
    return export(pretraining_checkpoint(tmp / "last.ckpt", ENCODERS["vgg"]), tmp / "model")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty huggingface-hub cache, offline, for this process and the ones it starts."""
    constants = pytest.importorskip("huggingface_hub.constants")
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    for name, value in {"HF_HOME": tmp_path / "hf", "HF_HUB_CACHE": cache, "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, str(value))
    # the client reads the environment when imported, which it already is
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def commit(cache: Path, repo_id: str, files: list[Path], refs: tuple[str, ...] = ("main",)) -> str:
    """Put ``files`` into the cache as huggingface-hub lays out a downloaded commit: the files under
    ``snapshots/<commit>/`` (links to ``blobs/``), and each ref a file holding the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    sha = hashlib.sha1(b"".join(f.name.encode() + f.read_bytes() for f in files)).hexdigest()
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for f in files:
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blob)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(sha)
    return sha


def test_a_cached_model_loads_by_its_id_like_its_folder(folder: Path, cache: Path) -> None:
    sha = commit(cache, "owner/name", sorted(folder.iterdir()), refs=("main", "v1"))
    audio = torch.randn(2, 16000 * 2)
    expected = ser_ssl.from_pretrained(folder).embed(audio)
    for name in ("owner/name", "owner/name@v1", f"owner/name@{sha}"):
        assert torch.equal(ser_ssl.from_pretrained(name).embed(audio), expected), name
    assert hub.pull("owner/name") == cache / "models--owner--name" / "snapshots" / sha


def test_push_then_pull_gives_the_same_model(folder: Path, cache: Path, monkeypatch, capsys) -> None:
    hf = pytest.importorskip("huggingface_hub")
    calls: dict[str, dict] = {}

    def create_repo(self, repo_id: str, **kwargs) -> str:
        calls["create_repo"] = {"repo_id": repo_id, **kwargs}
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id: str, folder_path: str, allow_patterns: list[str], **kwargs):
        """The Hub's side of a push, then the download of that commit: its files in the cache."""
        calls["upload_folder"] = {"repo_id": repo_id, "allow_patterns": allow_patterns, **kwargs}
        files = [
            p for p in sorted(Path(folder_path).iterdir()) if any(fnmatch(p.name, a) for a in allow_patterns)
        ]
        sha = commit(cache, repo_id, files)
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/{sha}", oid=sha)

    monkeypatch.setattr(hf.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(hf.HfApi, "upload_folder", upload_folder)
    mine = folder.parent / "to-push"
    shutil.copytree(folder, mine, dirs_exist_ok=True)
    (mine / "last.ckpt").write_bytes(b"not for the Hub")
    hub.main(["push", str(mine), "you/tiny", "--private"])
    url = capsys.readouterr().out.strip()
    assert url.startswith("https://huggingface.co/you/tiny/commit/")
    assert calls["create_repo"] == {
        "repo_id": "you/tiny",
        "private": True,
        "exist_ok": True,
        "repo_type": "model",
    }
    assert calls["upload_folder"]["allow_patterns"] == hub.FILES == calls["upload_folder"]["delete_patterns"]
    hub.main(["pull", "you/tiny"])
    pulled = Path(capsys.readouterr().out.strip())
    assert pulled.name == url.rsplit("/", 1)[1]
    assert sorted(p.name for p in pulled.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    audio = torch.randn(2, 16000)
    expected = ser_ssl.from_pretrained(folder).embed(audio)
    assert torch.equal(ser_ssl.from_pretrained("you/tiny").embed(audio), expected)


def test_offline_a_model_not_in_the_cache_is_one_line(cache: Path) -> None:
    with pytest.raises(hub.HubError, match="could not pull nobody/nothing@v2 from the Hugging Face Hub"):
        ser_ssl.from_pretrained("nobody/nothing@v2")
    with pytest.raises(SystemExit, match=r"^python -m ser_ssl.hub: error: could not pull nobody/nothing"):
        exit_on_user_error(lambda: hub.main(["pull", "nobody/nothing"]), prog="python -m ser_ssl.hub")


def test_the_command_pulls_from_the_cache_with_hf_hub_offline(folder: Path, cache: Path) -> None:
    """HF_HUB_OFFLINE and HF_HUB_CACHE as a user sets them, read by a fresh process."""
    sha = commit(cache, "owner/name", sorted(folder.iterdir()))
    out = subprocess.run(
        [sys.executable, "-m", "ser_ssl.hub", "pull", "owner/name"],
        capture_output=True,
        text=True,
        env=os.environ | {"HF_HUB_DISABLE_TELEMETRY": "1"},
        check=True,
    )
    assert Path(out.stdout.strip()) == cache / "models--owner--name" / "snapshots" / sha


def test_without_the_extra_the_error_says_what_to_install(folder: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` fails
    install = r"needs huggingface-hub: pip install 'ser-ssl\[hub\]'"
    with pytest.raises(hub.HubError, match=install):
        ser_ssl.from_pretrained("owner/name")
    with pytest.raises(hub.HubError, match=install):
        hub.push_to_hub(folder, "owner/name")
    assert ser_ssl.from_pretrained(str(folder)).class_names == []  # local folders need no Hub
    with pytest.raises(CheckpointError, match="is not an exported ser-ssl model"):
        ser_ssl.from_pretrained("no/such/folder")  # no Hub id either: the error of a missing folder


def test_hub_ids_and_what_push_refuses(folder: Path, tmp_path: Path) -> None:
    for name in ("owner/name", "owner/name@v1", "Org-1/my.model_2@refs/pr/3"):
        assert hub.is_hub_id(name), name
    for name in ("name", "a/b/c", "/abs/path", "./x/y", "../x", "owner/name@", "-x/y", "owner/na me"):
        assert not hub.is_hub_id(name), name
    with pytest.raises(hub.HubError, match="not the id of a Hugging Face Hub repository"):
        hub.push_to_hub(folder, "owner/name@v1")
    with pytest.raises(CheckpointError, match="is not an exported ser-ssl model"):
        hub.push_to_hub(tmp_path, "owner/name")
    with pytest.raises(hub.HubError, match="names one revision"):
        hub.pull("owner/name@v1", revision="v2")
