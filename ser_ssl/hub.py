"""Exported models on the Hugging Face Hub: push a folder of ``python -m ser_ssl.pretrained``, pull it
back anywhere by its id. Needs ``pip install 'ser-ssl[hub]'`` (huggingface-hub).

    python -m ser_ssl.hub push models/my-probe you/my-probe          # [--private]
    python -m ser_ssl.hub pull you/my-probe                          # prints the local folder

    import ser_ssl
    model = ser_ssl.from_pretrained("you/my-probe")                  # or "you/my-probe@v1": a revision

Only the folder's own files travel (:data:`FILES`), so a stray checkpoint next to them is never
uploaded. Pulled models live in huggingface-hub's cache (``HF_HOME``, ``HF_HUB_CACHE``): with
``HF_HUB_OFFLINE=1`` a model pulled once loads without the network.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from ser_ssl import __version__
from ser_ssl.errors import CheckpointError, UserError
from ser_ssl.pretrained import CARD, CONFIG, PORTABLE, WEIGHTS

FILES = [WEIGHTS, CONFIG, CARD, *PORTABLE.values()]
# "owner/name", optionally "@revision" (a branch, tag or commit); Hub names are letters, digits, "-", "_", "."
HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[^@\s]+))?", re.ASCII)
INSTALL = "pip install 'ser-ssl[hub]'"


class HubError(UserError, RuntimeError):
    """A model that could not be pushed or pulled, or huggingface-hub that is not installed."""


def is_hub_id(name: str) -> bool:
    """Whether ``name`` reads as ``owner/name[@revision]``; :func:`ser_ssl.from_pretrained` asks only
    for names that are not local paths, as ``models/my-probe`` reads as one too."""
    return HUB_ID.fullmatch(name) is not None


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
) -> str:
    """Upload an exported folder to the model repository ``repo_id`` (created if missing) and return the
    commit's URL. Its model files replace the repository's (``delete_patterns``), so an ONNX file of an
    earlier push does not stay beside newer weights. ``token``: HF_TOKEN or a stored login when None;
    ``private`` applies to a new repository (the organisation's default when False)."""
    folder = Path(folder)
    match = HUB_ID.fullmatch(repo_id)
    if match is None or match["revision"]:
        raise HubError(f"{repo_id!r} is not the id of a Hugging Face Hub repository (owner/name)")
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise CheckpointError(
            f"{folder} is not an exported ser-ssl model (it needs {CONFIG} and {WEIGHTS}); "
            "write one with python -m ser_ssl.pretrained CHECKPOINT OUT_DIR"
        )
    hf = _huggingface_hub(f"pushing {folder} to the Hugging Face Hub")
    api = hf.HfApi(token=token, library_name="ser-ssl", library_version=__version__)
    try:
        api.create_repo(repo_id, private=private or None, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            allow_patterns=FILES,
            delete_patterns=FILES,
            commit_message=commit_message or f"ser-ssl {__version__}: {folder.name}",
        )
    except hf.utils.HfHubHTTPError as err:
        raise HubError(f"could not push {folder} to {repo_id}: {_first_line(err)}") from err
    return info.commit_url


def pull(
    repo_id: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | None = None,
) -> Path:
    """The local folder of the model ``repo_id`` (``owner/name`` or ``owner/name@revision``), downloaded
    into huggingface-hub's cache unless it is there already. Offline (``HF_HUB_OFFLINE=1`` or
    ``local_files_only``) it must have been pulled before."""
    match = HUB_ID.fullmatch(repo_id)
    if match is None:
        raise HubError(f"{repo_id!r} is not a Hugging Face Hub id (owner/name or owner/name@revision)")
    if match["revision"] and revision and match["revision"] != revision:
        raise HubError(f"{repo_id!r} names one revision and revision={revision!r} another")
    repo_id, revision = match["repo"], match["revision"] or revision
    name = repo_id + (f"@{revision}" if revision else "")
    hf = _huggingface_hub(f"pulling {name} from the Hugging Face Hub")
    try:
        folder = hf.snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=FILES,
            local_files_only=local_files_only,
            token=token,
            library_name="ser-ssl",
            library_version=__version__,
        )
    except (hf.utils.LocalEntryNotFoundError, hf.utils.HfHubHTTPError) as err:
        raise HubError(f"could not pull {name} from the Hugging Face Hub: {_first_line(err)}") from err
    folder = Path(folder)
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise HubError(f"{name} holds no exported ser-ssl model (no {CONFIG} and {WEIGHTS} at its top level)")
    return folder


def _huggingface_hub(purpose: str) -> ModuleType:
    """huggingface-hub, imported when needed: it is an optional extra."""
    try:
        import huggingface_hub
        import huggingface_hub.utils  # its errors, which the top level does not export
    except ImportError as err:
        raise HubError(f"{purpose} needs huggingface-hub: {INSTALL}") from err
    return huggingface_hub


def _first_line(err: BaseException) -> str:
    return next(iter(str(err).strip().splitlines()), type(err).__name__)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ser_ssl.hub",
        description="Push an exported ser-ssl model folder to the Hugging Face Hub, or pull one. Log in with "
        f"huggingface-hub's CLI or set HF_TOKEN to push (and to pull private models). Needs {INSTALL}.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    push = commands.add_parser("push", help="upload a folder written by python -m ser_ssl.pretrained")
    push.add_argument("folder", help="the exported folder")
    push.add_argument("repo_id", help="owner/name of the model repository (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--message", help="the commit message")
    get = commands.add_parser("pull", help="download a model into the cache and print its folder")
    get.add_argument("repo_id", help="owner/name, or owner/name@revision")
    get.add_argument("--revision", help="a branch, tag or commit (default: main)")
    get.add_argument("--cache-dir", help="instead of huggingface-hub's cache (HF_HUB_CACHE)")
    args = parser.parse_args(argv)
    if args.command == "push":
        print(push_to_hub(args.folder, args.repo_id, private=args.private, commit_message=args.message))
    else:
        print(pull(args.repo_id, revision=args.revision, cache_dir=args.cache_dir))


if __name__ == "__main__":
    from ser_ssl.cli import exit_on_user_error

    exit_on_user_error(main, prog="python -m ser_ssl.hub")
