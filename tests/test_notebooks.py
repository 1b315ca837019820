"""Every notebook in notebooks/ runs headless on tiny data, and none is committed with outputs.

Parameters reach the notebooks as environment variables: ``SER_SSL_NB_CONFIG`` and ``SER_SSL_NB_ARGS``
(the tiny data) for all, and ``SER_SSL_NB_CHECKPOINT`` and ``SER_SSL_NB_RUN`` (the ``pretrained`` fixture's
run) for those that read a pretraining run.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "ser-ssl-test"


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs: clear them before committing"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"


def kernel_manager(directory: Path) -> KernelManager:
    """A kernel running this interpreter (the venv's), whatever kernelspecs the machine has installed.

    The spec is written to a temporary folder that is the only one searched, so no install step is
    needed and a user's own ``python3`` kernel (perhaps another Python) is never picked up.
    """
    spec_dir = directory / KERNEL
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec_dir / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )
    specs = KernelSpecManager(kernel_dirs=[str(directory)], ensure_native_kernel=False)
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def training_clips(manifest: Path, out: Path) -> Path:
    """A copy of ``manifest`` with its training clips only (absolute paths): the notebooks read nothing
    else, and caching a third of the clips keeps the test fast."""
    with manifest.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r["split"] == "train"]
    for row in rows:
        row["filename"] = str(manifest.parent / row["filename"])
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return out


def needs_a_run(nb: nbformat.NotebookNode) -> bool:
    """Whether the notebook reads a pretraining run (``SER_SSL_NB_CHECKPOINT`` or ``SER_SSL_NB_RUN``), so
    the ``pretrained`` fixture's run is made only for the notebooks that need it."""
    sources = "".join(c.source for c in nb.cells if c.cell_type == "code")
    return "SER_SSL_NB_CHECKPOINT" in sources or "SER_SSL_NB_RUN" in sources


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_on_tiny_data(path: Path, tiny_data: Path, tmp_path: Path, monkeypatch, request):
    args = [
        "--data.init_args.manifest",
        str(training_clips(tiny_data, tmp_path / "train.csv")),
        "--data.init_args.cache_dir",
        str(tmp_path / "cache"),
        "--data.init_args.batch_size",
        "8",
        "--data.init_args.num_workers",
        "0",
    ]
    monkeypatch.setenv("SER_SSL_NB_CONFIG", "configs/pretrain.yaml")
    monkeypatch.setenv("SER_SSL_NB_ARGS", json.dumps(args))
    nb = nbformat.read(path, as_version=4)
    if needs_a_run(nb):  # a real 5-epoch pretraining run on the tiny data (conftest.py)
        run = request.getfixturevalue("pretrained") / "pretrain"
        monkeypatch.setenv("SER_SSL_NB_CHECKPOINT", str(run / "checkpoints" / "last.ckpt"))
        monkeypatch.setenv("SER_SSL_NB_RUN", str(run))
    km = kernel_manager(tmp_path / "kernels")
    client = NotebookClient(nb, km=km, timeout=300, resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if a cell fails
    images = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})
    ]
    assert images, f"{path.name} displayed no figure"
