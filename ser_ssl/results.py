"""The results table in one command: baselines, SSL probe, fine-tuning and the paper's view ablations.

Every row is a chain of ordinary ``ser-ssl`` commands (pretraining, then ``fit`` and ``test`` of a
probe or a fine-tune), run once per seed in this process; the table reports the test metric's mean ±
sample standard deviation over the seeds::

    python -m ser_ssl.results --manifest data/real/drums/manifest.csv --seeds 0 1 2   # make results

Rows (``--rows`` picks some; each names the configs it layers, as a user would type them):

- ``logmel``: log-mel statistics under the linear probe (``configs/logmel_stats.yaml``), no network;
- ``random``: linear probe on the pretraining's encoder architecture with random weights (no
  pretraining needed);
- ``ssl``: linear probe on the encoder pretrained with ``configs/pretrain.yaml`` as it is;
- ``finetune`` / ``scratch``: that encoder fine-tuned, and the same network trained from scratch;
- ``finetune_10pct`` / ``scratch_10pct``: the same two with the labels of 10% of the training clips
  (``label_fraction``; the same clips for both), where pretraining on all of them has more to add;
- one linear-probe row per ablation preset in ``configs/views/``.

Work already done is kept: a run whose ``result.json`` exists is read, not rerun, and a pretraining
cut off midway resumes from its ``last.ckpt``; a run directory made with other settings (its
``fingerprint.txt`` covers the options, the configs' contents and the pretraining) is refused. So
the table can be built over several sittings, and an interrupted ``make results`` loses at most the
run in progress' last epoch; a pretraining's minutes add up its sittings until their last checkpoints
(``attempts.json``). Each run directory holds the run's ``command.txt``. Outputs under
``--out``: ``results.csv`` (a line per row and seed), ``results.md`` (the table and each row's
commands) and ``ablations.png``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shlex
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ser_ssl.errors import ConfigError, MissingFileError
from ser_ssl.experiments import cell, console, fit_and_test, mean_std, resolved_config, run_commands
from ser_ssl.files import atomic_write_text


@dataclass(frozen=True)
class Row:
    """One line of the table: a downstream task on a pretraining variant (``None``: no pretraining);
    with ``trained`` false, on that variant's encoder architecture with random weights (no pretraining
    runs)."""

    name: str
    label: str
    group: str  # "main", "labels", "encoders" or "ablation"
    downstream: tuple[str, ...]  # configs (and options) of the probe or fine-tune
    pretrain: str | None = "default"
    extra: tuple[str, ...] = field(default_factory=tuple)
    trained: bool = True  # false: the pretraining's encoder architecture only, randomly initialised


PROBE = ("--config", "configs/probe.yaml")
FINETUNE = ("--config", "configs/finetune.yaml")
SCRATCH = ("--config", "configs/scratch.yaml")
TENTH = ("--data.init_args.label_fraction", "0.1")

# Pretraining variants: configs layered on configs/pretrain.yaml.
VARIANTS: dict[str, tuple[str, ...]] = {"default": ()}
ABLATIONS = {
    "no_mixback": "no mix-back",
    "mixback_only": "mix-back only",
    "rrc": "mix-back + random resized crop",
    "shift": "mix-back + time-frequency shift",
    "compression": "mix-back + compression",
    "specaugment": "mix-back + SpecAugment",
    "blur": "mix-back + Gaussian blur",
    "noise": "mix-back + Gaussian noise",
    "all": "mix-back + all six",
    "paper": "mix-back + all six, the public code's variants",
}
VARIANTS.update({name: ("--config", f"configs/views/{name}.yaml") for name in ABLATIONS})
# The paper's encoders, layer for layer, pretrained and probed like the default encoder.
PAPER_ENCODERS = {
    "paper_vgg": "the paper's VGG-like CNN",
    "paper_crnn": "the paper's CRNN",
    "paper_resnet18": "the paper's ResNet-18",
}
VARIANTS.update({name: ("--config", f"configs/encoders/{name}.yaml") for name in PAPER_ENCODERS})

ROWS: tuple[Row, ...] = (
    Row("logmel", "log-mel statistics + logistic regression", "main",
        (*PROBE, "--config", "configs/logmel_stats.yaml"), pretrain=None),
    Row("random", "linear probe, random encoder", "main", PROBE, trained=False),
    Row("ssl", "linear probe, SSL encoder (configs/pretrain.yaml)", "main", PROBE),
    Row("finetune", "fine-tuned SSL encoder", "main", FINETUNE),
    Row("scratch", "same network trained from scratch", "main", SCRATCH, pretrain=None),
    Row("finetune_10pct", "fine-tuned SSL encoder, 10% of the labels", "labels", FINETUNE, extra=TENTH),
    Row("scratch_10pct", "trained from scratch, 10% of the labels", "labels", SCRATCH, pretrain=None,
        extra=TENTH),
    *(Row(name, f"linear probe, SSL {label}", "encoders", PROBE, pretrain=name)
      for name, label in PAPER_ENCODERS.items()),
    *(Row(f"ablation_{name}", label, "ablation", PROBE, pretrain=name) for name, label in ABLATIONS.items()),
)  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ser_ssl.results",
        description="Build the results table (mean ± std over seeds) by running ser-ssl commands.",
    )
    parser.add_argument(
        "--manifest", default=None, help="CSV manifest of the data (default: the built-in synthetic set)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--rows",
        nargs="+",
        choices=[r.name for r in ROWS],
        default=None,
        help="rows to run (default: all); a row runs the pretraining it needs",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/results"))
    parser.add_argument("--metric", default="test/bal_acc", help="test metric of the table")
    parser.add_argument(
        "--pretrain-args",
        default="",
        help="options added to every pretraining, e.g. '--trainer.max_epochs 5'",
    )
    parser.add_argument("--downstream-args", default="", help="options added to every probe / fine-tune")
    parser.add_argument("--wandb", default="disabled", choices=["offline", "online", "disabled"])
    return parser.parse_args(argv)  # fmt: skip


class Runner:
    """Runs (or reuses) each seed's pretraining and downstream runs under ``out``."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.out: Path = options.out
        self.metric: str = options.metric
        data = ("--data.init_args.manifest", options.manifest) if options.manifest else ()
        common = (*data, "--wandb", options.wandb)
        self.pretrain_common = (*common, *shlex.split(options.pretrain_args))
        self.downstream_common = (*common, *shlex.split(options.downstream_args))

    def pretrain_root(self, variant: str, seed: int) -> Path:
        return self.out / "pretrain" / variant / f"seed{seed}"

    def pretrain_args(self, variant: str, seed: int) -> list[str]:
        """The ``ser-ssl fit`` options of ``variant``'s pretraining for ``seed``."""
        return [
            "--config", "configs/pretrain.yaml", *VARIANTS[variant], *self.pretrain_common,
            "--seed_everything", str(seed),
            "--trainer.default_root_dir", str(self.pretrain_root(variant, seed)),
        ]  # fmt: skip

    def pretrain(self, variant: str, seed: int) -> tuple[Path, dict]:
        """The checkpoint of ``variant`` for ``seed`` and its run record, training it if needed."""
        root = self.pretrain_root(variant, seed)
        args = self.pretrain_args(variant, seed)
        mark = fingerprint(args)
        record = self._done(root, mark)
        last = root / "checkpoints" / "last.ckpt"
        if record is None:
            # earlier sittings count only while their checkpoint is there to resume from
            attempts_file = root / "attempts.json"
            resumable = last.is_file()
            attempts = json.loads(attempts_file.read_text()) if attempts_file.is_file() and resumable else []
            attempts = close_attempts(attempts, last.stat().st_mtime if resumable else None)
            began = time.time()
            atomic_write_text(attempts_file, json.dumps([*attempts, [began, None]]))
            resume = ["--ckpt_path", "last"] if resumable else []
            record = run_commands(root, [("fit", args + resume)])
            atomic_write_text(attempts_file, json.dumps([*attempts, [began, time.time()]]))
            record["minutes"] += sum(end - start for start, end in attempts) / 60
            record["attempts"] = len(attempts) + 1
            record["fingerprint"] = mark
            atomic_write_text(root / "result.json", json.dumps(record, indent=2))
        return last, record

    def row(self, row: Row, seed: int) -> dict:
        """Run (or read) one row for one seed: its metrics, minutes and commands."""
        root = self.out / row.name / f"seed{seed}"
        pretrain_minutes, upstream = None, ""
        ckpt: list[str] = []
        if row.pretrain is not None and not row.trained:
            encoder = encoder_config(self.pretrain_args(row.pretrain, seed))
            ckpt = ["--model.init_args.encoder_checkpoint", "null", "--model.init_args.encoder", encoder]
        elif row.pretrain is not None:
            path, record = self.pretrain(row.pretrain, seed)
            pretrain_minutes, upstream = record["minutes"], record["fingerprint"]
            ckpt = ["--model.init_args.encoder_checkpoint", str(path)]
        args = [
            *row.downstream, *ckpt, *row.extra, *self.downstream_common,
            "--seed_everything", str(seed), "--trainer.default_root_dir", str(root),
        ]  # fmt: skip
        mark = fingerprint(args, upstream)
        record = self._done(root, mark)
        if record is None:
            metrics, record = fit_and_test(args, root, f"{row.name}, seed {seed}")
            record["fingerprint"], record["metrics"] = mark, metrics
            atomic_write_text(root / "result.json", json.dumps(record, indent=2))
        if self.metric not in record["metrics"]:
            raise ConfigError(
                f"{row.name}: the test reported no {self.metric} (it has {sorted(record['metrics'])})"
            )
        return {
            "row": row.name, "label": row.label, "group": row.group, "seed": seed,
            "value": record["metrics"][self.metric], "pretrain_minutes": pretrain_minutes,
            "minutes": record["minutes"], "commands": record["commands"],
        }  # fmt: skip

    @staticmethod
    def _done(root: Path, expected: str) -> dict | None:
        """The record of the finished run in ``root``, ``None`` if there is none yet. Marks ``root``
        with ``expected`` and refuses a run (finished or cut off) that other settings made, rather
        than mixing it into the table."""
        mark = root / "fingerprint.txt"
        if mark.is_file() and mark.read_text().strip() != expected:
            raise ConfigError(
                f"{root} holds a run made with other settings (a config or an option changed since); "
                "delete it to rerun it, or pass another --out"
            )
        root.mkdir(parents=True, exist_ok=True)
        mark.write_text(expected + "\n")
        result = root / "result.json"
        return json.loads(result.read_text()) if result.is_file() else None


def encoder_config(pretrain_args: list[str]) -> str:
    """The encoder (class and arguments, as JSON) that ``ser-ssl fit <pretrain_args>`` would build,
    resolved by the CLI's own parser, so the random-encoder row probes the pretraining's
    architecture, overrides included, without waiting for a pretraining."""
    encoder = resolved_config(pretrain_args).get("model", {}).get("init_args", {}).get("encoder")
    if encoder is None:
        raise ConfigError(f"the pretraining builds no model.init_args.encoder: {shlex.join(pretrain_args)}")
    return json.dumps(encoder)


def close_attempts(attempts: list[list[float | None]], checkpoint_time: float | None) -> list[list[float]]:
    """Earlier ``[start, end]`` wall-clock times of a pretraining that was cut off, the last one still
    open (``end`` None). Its end becomes the time of its last checkpoint, since the work after it is
    redone on resuming; an attempt cut before it saved one counts nothing. The table's pretraining
    minutes are then those of one uninterrupted run, however many sittings it took."""

    def close(start: float) -> float:
        return checkpoint_time if checkpoint_time is not None and checkpoint_time > start else start

    return [[start, close(start) if end is None else end] for start, end in attempts]


def fingerprint(args: list[str], upstream: str = "") -> str:
    """What a run's result depends on: its whole config as the CLI resolves it (options, the config
    files' contents, the code's defaults) and the fingerprint of the pretraining it starts from."""
    digest = hashlib.sha256(upstream.encode())
    digest.update(json.dumps(resolved_config(args), sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def summarize(lines: list[dict]) -> list[dict]:
    """Per row: mean and sample standard deviation (``None`` for one seed) of the metric and times."""
    rows = []
    for name in dict.fromkeys(line["row"] for line in lines):
        mine = [line for line in lines if line["row"] == name]
        mean, std = mean_std([line["value"] for line in mine])
        pretrain = [line["pretrain_minutes"] for line in mine if line["pretrain_minutes"] is not None]
        rows.append({
            "row": name, "label": mine[0]["label"], "group": mine[0]["group"], "seeds": len(mine),
            "mean": mean, "std": std,
            "pretrain_minutes": statistics.fmean(pretrain) if pretrain else None,
            "minutes": statistics.fmean(line["minutes"] for line in mine), "commands": mine[0]["commands"],
        })  # fmt: skip
    return rows


def markdown(summary: list[dict], metric: str) -> str:
    """The table (a row per line of ``summary``), then the commands that made each row's first seed."""

    lines = [
        f"| row | {metric} (mean ± std) | seeds | pretraining min | probe / fine-tune min |",
        "|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(
            f"| {r['label']} | {cell(r['mean'], 3)} ± {cell(r['std'], 3)} | {r['seeds']} | "
            f"{cell(r['pretrain_minutes'], 1)} | {cell(r['minutes'], 1)} |"
        )
    lines += [
        "",
        "Commands of each row's first seed (pretraining commands: `pretrain/<variant>/*/command.txt`):",
        "",
    ]
    for r in summary:
        lines += [f"- {r['label']}:", "  ```", *(f"  {c}" for c in r["commands"]), "  ```"]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, lines: list[dict]) -> None:
    fields = ["row", "label", "group", "seed", "value", "pretrain_minutes", "minutes"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(lines)


def plot_ablations(path: Path, summary: list[dict], metric: str) -> None:
    """Horizontal bars (mean ± std) of the ablation rows and the SSL row, with the baselines as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_name = {r["row"]: r for r in summary}
    bars = [r for r in summary if r["group"] == "ablation"] + [by_name[n] for n in ("ssl",) if n in by_name]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(bars) + 1.5), layout="constrained")
    ax.barh(
        [r["label"] for r in bars], [r["mean"] for r in bars],
        xerr=[r["std"] or 0.0 for r in bars], color="tab:blue", capsize=3,
    )  # fmt: skip
    for name, color in (("logmel", "tab:orange"), ("random", "tab:gray")):
        if name in by_name:
            ax.axvline(by_name[name]["mean"], color=color, linestyle="--", label=by_name[name]["label"])
    lows = [r["mean"] - (r["std"] or 0.0) for r in bars] + [
        by_name[n]["mean"] for n in ("logmel", "random") if n in by_name
    ]
    ax.set_xlim(max(0.0, min(lows) - 0.05), 1.0)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric}, linear probe (mean ± std over seeds)")
    if ax.get_legend_handles_labels()[0]:
        # Above the axes: inside them it hides the bars' ends, which are the point of the plot.
        fig.legend(loc="outside upper center", fontsize="small", frameon=False)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Run the chosen rows for every seed, write the CSV, Markdown and plot; returns the summary."""
    options = parse_args(argv)
    if options.manifest and not Path(options.manifest).is_file():
        raise MissingFileError(
            f"manifest {options.manifest} does not exist (`make drums` builds the drums set: docs/results.md)"
        )
    rows = [r for r in ROWS if options.rows is None or r.name in options.rows]
    runner = Runner(options)
    lines = [runner.row(row, seed) for row in rows for seed in options.seeds]
    summary = summarize(lines)
    options.out.mkdir(parents=True, exist_ok=True)
    write_csv(options.out / "results.csv", lines)
    table = markdown(summary, options.metric)
    (options.out / "results.md").write_text(table)
    if any(r["group"] == "ablation" for r in summary):
        plot_ablations(options.out / "ablations.png", summary, options.metric)
    print(table)
    return summary


def entry_point() -> None:
    """Console-script entry (``ser-ssl-results``)."""
    console(main, "ser-ssl-results")


if __name__ == "__main__":
    entry_point()
