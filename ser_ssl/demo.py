"""`make demo`: pretrain on the built-in data, then linear-probe the pretrained and a random encoder.

Runs the same CLI commands a user would type (see the README) in one process and prints the two
clip-level balanced accuracies side by side.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ser_ssl.experiments import fit_and_test, run_commands


def run(configs: Path, root: Path, extra: list[str]) -> dict[str, dict[str, float]]:
    """Pretrain, then fit and test a probe on each encoder; returns the test metrics per encoder.
    Each call starts afresh: the run folders of an earlier demo under ``root`` are removed first
    (``ser-ssl fit`` itself refuses to start over a folder that holds a checkpoint)."""
    for name in ("pretrain", "probe-ssl", "probe-random"):
        if (root / name).exists():
            print(f"demo: removing the earlier demo run {root / name}")
            shutil.rmtree(root / name)
    pretrain = [
        "--config",
        str(configs / "pretrain.yaml"),
        "--trainer.default_root_dir",
        str(root / "pretrain"),
    ]
    timings = {"pretrain": 60 * run_commands(root / "pretrain", [("fit", [*pretrain, *extra])])["minutes"]}
    encoder = root / "pretrain" / "checkpoints" / "last.ckpt"
    results = {}
    for name, load_weights in (("pretrained (SSL)", "true"), ("random init", "false")):
        probe_root = root / f"probe-{'ssl' if load_weights == 'true' else 'random'}"
        args = [
            "--config", str(configs / "probe.yaml"), "--trainer.default_root_dir", str(probe_root),
            "--model.init_args.encoder_checkpoint", str(encoder),
            "--model.init_args.load_weights", load_weights, *extra,
        ]  # fmt: skip
        metrics, record = fit_and_test(args, probe_root, f"the probe on the {name} encoder")
        results[name] = {k: v for k, v in metrics.items() if k.startswith("test/")}
        timings[f"probe {name}"] = 60 * record["minutes"]
    print_table(results, timings)
    (root / "demo_results.json").write_text(json.dumps({"results": results, "seconds": timings}, indent=2))
    return results


def print_table(results: dict[str, dict[str, float]], timings: dict[str, float]) -> None:
    print("\nLinear probe on the built-in synthetic data set (test split, clip level)")
    print(f"{'encoder':<20}{'balanced accuracy':>20}{'accuracy':>12}")
    for name, m in results.items():
        print(f"{name:<20}{m['test/bal_acc']:>20.3f}{m['test/acc']:>12.3f}")
    print("time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", type=Path, default=Path("configs"))
    parser.add_argument("--root", type=Path, default=Path("runs/demo"))
    args, extra = parser.parse_known_args()
    run(args.configs, args.root, extra)


if __name__ == "__main__":
    main()
