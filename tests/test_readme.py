"""README.md and docs/*.md name only real things, and the custom-encoder example works as written.

Every `configs/...` path exists, every `make <target>` is a Makefile target, every `python -m <module>`
is importable, every `ser-ssl <subcommand> --config <path>` names a real subcommand and config, and
every relative link (and its #anchor) resolves. Nothing here runs a training command except the
custom-encoder example, which is marked slow.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

from ser_ssl.cli import cli_main
from tests.conftest import tiny_args

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SUBCOMMANDS = {"fit", "validate", "test", "predict"}

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", flags=re.S | re.M)
INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)*)`")
CONFIG_PATH = re.compile(r"(?<![\w/.-])configs/[\w./*-]*")
MAKE = re.compile(r"(?:^|[\s;&|(])make\s+([a-z][\w-]*)", flags=re.M)
PYTHON_M = re.compile(r"(?:^|\s)-m\s+([A-Za-z_][\w.]*)", flags=re.M)
SER_SSL = re.compile(r"(?:^[ \t]*|[;&|][ \t]*|/)ser-ssl[ \t]+([^\s#]+)((?:[^\n#]|\\\n)*)", flags=re.M)
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")


def code_of(text: str) -> list[str]:
    """The fenced blocks and the inline code spans of a markdown text."""
    blocks = FENCE.findall(text)
    prose = FENCE.sub("", text)
    return blocks + INLINE.findall(prose)


def prose_of(text: str) -> str:
    """The text without fenced blocks and inline code (where links live)."""
    return INLINE.sub("", FENCE.sub("", text))


def make_targets(makefile: Path = ROOT / "Makefile") -> set[str]:
    targets = set()
    for line in makefile.read_text().splitlines():
        if line.startswith(".PHONY:"):
            targets.update(line.split(":", 1)[1].split())
        elif m := re.match(r"^([A-Za-z][\w.-]*)\s*:(?!=)", line):
            targets.add(m.group(1))
    return targets


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation and symbols dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", FENCE.sub("", text), flags=re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def module_exists(name: str) -> bool:
    """A module or regular package; not a namespace package, which any folder in the working
    directory (``runs/``, ``data/``) would make on this machine and not on a fresh clone."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin not in (None, "namespace")


def problems(path: Path, text: str, root: Path = ROOT) -> list[str]:
    """What ``text`` (the contents of ``path``) names that does not exist."""
    found: list[str] = []
    code = code_of(text)
    targets = make_targets(root / "Makefile")

    for ref in sorted({m.rstrip(".") for m in CONFIG_PATH.findall(text)}):
        if not (any(root.glob(ref)) if "*" in ref else (root / ref).exists()):
            found.append(f"{path.name}: {ref} does not exist")

    for chunk in code:
        for target in MAKE.findall(chunk):
            if target not in targets:
                found.append(f"{path.name}: `make {target}` is not a Makefile target")
        for module in PYTHON_M.findall(chunk):
            if not module_exists(module):
                found.append(f"{path.name}: `python -m {module}` is not an importable module")
        for sub, rest in SER_SSL.findall(chunk):
            if sub.startswith("-"):  # ser-ssl --help and the like
                continue
            if sub not in SUBCOMMANDS:
                found.append(f"{path.name}: `ser-ssl {sub}` is not a subcommand")
            for config in re.findall(r"--config[\s=]+(\S+)", rest):
                if not config.startswith("$") and not (root / config).is_file():
                    found.append(f"{path.name}: `ser-ssl {sub} --config {config}`: no such config")

    for target in LINK.findall(prose_of(text)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            found.append(f"{path.name}: link to {target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
            found.append(f"{path.name}: link to {target}: no such heading")
    return found


def test_readme_and_docs_exist():
    assert (ROOT / "docs").is_dir() and len(DOCS) > 1


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_config_and_link_is_real(doc, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks.run is a module of the repository itself
    assert problems(doc, doc.read_text()) == []


def test_the_check_rejects_made_up_names(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    (tmp_path / "real.md").write_text("# A heading\n")
    fake = tmp_path / "fake.md"
    text = "\n".join(
        [
            "Run `make demo` and see configs/pretrain.yaml and [a page](real.md#a-heading).",
            "```bash",
            "make no-such-target",
            "python -m ser_ssl.no_such_module",
            "ser-ssl fit --config configs/pretrain.yaml --config configs/no_such.yaml",
            "ser-ssl train --config configs/probe.yaml",
            "```",
            "Also configs/views/missing.yaml, [gone](docs/gone.md) and [bad anchor](real.md#other).",
        ]
    )
    found = problems(fake, text)
    expected = [
        "configs/no_such.yaml does not exist",
        "configs/views/missing.yaml does not exist",
        "`make no-such-target` is not a Makefile target",
        "`python -m ser_ssl.no_such_module` is not an importable module",
        "`ser-ssl fit --config configs/no_such.yaml`: no such config",
        "`ser-ssl train` is not a subcommand",
        "link to docs/gone.md: no such file",
        "link to real.md#other: no such heading",
    ]
    for message in expected:
        assert any(message in f for f in found), (message, found)
    assert len(found) == len(expected), found  # `make demo`, pretrain.yaml and real.md#a-heading pass


def python_blocks() -> list[str]:
    return [b for doc in DOCS for b in re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)]


@pytest.mark.slow
def test_custom_encoder_from_the_docs_pretrains_and_probes(tmp_path, tiny_data, monkeypatch):
    (block,) = [b for b in python_blocks() if "class TinyEncoder" in b]
    (tmp_path / "my_encoder.py").write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_encoder", raising=False)
    args = tiny_args("pretrain", tmp_path / "pretrain", tiny_data, tmp_path / "cache")
    args += ["--model.encoder", "my_encoder.TinyEncoder", "--model.encoder.init_args.embed_dim", "64"]
    cli = cli_main(["fit", *args, "--trainer.max_steps", "2"])
    assert type(cli.model.encoder).__name__ == "TinyEncoder" and cli.model.encoder.embed_dim == 64
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    probe_args = tiny_args("probe", tmp_path / "probe", tiny_data, tmp_path / "cache")
    probe_args += ["--model.encoder_checkpoint", str(tmp_path / "pretrain" / "checkpoints" / "last.ckpt")]
    with pytest.raises(Exception, match="SER_SSL_TRUST_CHECKPOINTS"):  # not one of ser-ssl's encoders
        cli_main(["fit", *probe_args, "--trainer.max_epochs", "1"])
    monkeypatch.setenv("SER_SSL_TRUST_CHECKPOINTS", "1")
    probe = cli_main(["fit", *probe_args, "--trainer.max_epochs", "1"])
    assert type(probe.model.encoder).__name__ == "TinyEncoder"
    assert probe.model.classifier[-1].in_features == 64
