"""Trained models as portable folders: export a checkpoint, load it back in one call.

    python -m ser_ssl.pretrained runs/probe/checkpoints/last.ckpt models/my-probe

    import ser_ssl
    model = ser_ssl.from_pretrained("models/my-probe")
    embedding = model.embed_file("kick.wav")          # [D]
    scores = model.classify(waveforms)                # [n, classes] (probe and fine-tune exports)

The folder holds ``model.safetensors`` (tensors only: loading it runs no code), ``config.json``
(everything that rebuilds audio -> log-mel -> embedding -> class scores: the encoder's class and
settings, the log-mel settings, the window length, the class names) and ``README.md``, a model card
written from the run. Loading needs ser-ssl's encoders and front end, not its training code or the
checkpoint's torch version; like a checkpoint, a folder only builds ser-ssl's own encoders unless
``SER_SSL_TRUST_CHECKPOINTS=1`` (see :func:`~ser_ssl.models.build.check_trusted`).

``--torchscript`` and ``--onnx`` (:func:`export_portable`) add ``model.torchscript.pt`` and ``model.onnx``,
which run without ser-ssl: audio windows -> embeddings (and class scores), see :class:`PortableModel`.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ser_ssl import __version__
from ser_ssl.audio import LogMelConfig, Standardize, load_audio
from ser_ssl.errors import CheckpointError, UserError
from ser_ssl.inference import HEARModel
from ser_ssl.models.build import build_module, check_trusted

FORMAT = "ser-ssl-model"
FORMAT_VERSION = 1
WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
# export_portable: files that run without ser-ssl (TorchScript: torch only; ONNX: onnxruntime)
PORTABLE = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
ONNX_OPSET = 18  # STFT came in 17; 18 is torch.onnx's own (its default, 20, is converted up from it)


class PretrainedModel(HEARModel):
    """Log-mel front end, input standardisation, encoder and, for probe and fine-tune exports, the
    classifier. Sounds are cut into windows of ``patch_frames`` as in evaluation; a sound's
    embedding is the mean of its windows' embeddings and its class scores the mean of its windows'
    softmax (sigmoid when multi-label), which is how ser-ssl scores clips.

    ``model.encoder`` is a plain ``nn.Module`` (``[B, 1, n_mels, frames] -> [B, D]``) to put into
    your own model; ``model.logmel`` and ``model.normalizer`` make its input from audio.
    """

    def __init__(
        self,
        encoder: nn.Module,
        normalizer: Standardize,
        features: LogMelConfig,
        patch_frames: int,
        classifier: nn.Module | None = None,
        class_names: Sequence[str] = (),
        multilabel: bool = False,
    ) -> None:
        super().__init__(encoder, normalizer, features, patch_frames)
        self.classifier = classifier
        self.class_names = list(class_names)
        self.multilabel = multilabel

    @torch.inference_mode()
    def embed(self, audio: torch.Tensor) -> torch.Tensor:
        """Sound embeddings ``[n_sounds, D]`` of ``[n_sounds, n_samples]`` audio at ``sample_rate``:
        the mean over each sound's windows."""
        return self(audio)

    @torch.inference_mode()
    def classify(self, audio: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[n_sounds, classes]`` in the order of ``class_names``."""
        if self.classifier is None:
            raise ValueError("this model has no classifier (exported from a pretraining checkpoint)")
        h = self.window_embeddings(audio)
        logits = self.classifier(h.flatten(0, 1)).float()
        probs = torch.sigmoid(logits) if self.multilabel else F.softmax(logits, dim=-1)
        return probs.view(*h.shape[:2], -1).mean(dim=1)

    def embed_file(self, path: str | Path) -> torch.Tensor:
        """The embedding ``[D]`` of one audio file (decoded, mixed to mono and resampled)."""
        return self.embed(self._load(path))[0]

    def classify_file(self, path: str | Path) -> dict[str, float]:
        """Each class's probability for one audio file."""
        return dict(zip(self.class_names, self.classify(self._load(path))[0].tolist(), strict=True))

    def _load(self, path: str | Path) -> torch.Tensor:
        device = next(self.parameters()).device
        return load_audio(path, self.sample_rate).to(device)[None]


def export(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write the folder of a pretraining, probe or fine-tune checkpoint to ``out_dir``."""
    # the training code reads checkpoints; it is imported here only, so loading a folder never needs it
    from ser_ssl.tasks.checkpoint import pretrained_from, read_checkpoint
    from ser_ssl.tasks.downstream import HEAD_KEY
    from ser_ssl.tasks.simclr import CHECKPOINT_KIND

    checkpoint, out = Path(checkpoint), Path(out_dir)
    ckpt = read_checkpoint(checkpoint, "checkpoint", "pass a checkpoint written by `ser-ssl fit`")
    if ckpt.get("ser_ssl_kind") == CHECKPOINT_KIND:
        pre = pretrained_from(ckpt, checkpoint)
        spec, features, patch_frames, head = pre.encoder_spec, pre.features, pre.patch_frames, None
        tensors = _prefixed("encoder.", pre.encoder.state_dict()) | _prefixed("normalizer.", pre.stats)
        kind = "pretrained encoder"
    elif isinstance(ckpt.get(HEAD_KEY), dict):
        head = ckpt[HEAD_KEY]
        spec, data = head.get("encoder"), head.get("data") or {}
        features = LogMelConfig(**data["features"]) if "features" in data else None
        patch_frames = data.get("patch_frames")
        parts = ("encoder.", "normalizer.", "classifier.")
        tensors = {k: v for k, v in ckpt["state_dict"].items() if k.startswith(parts)}
        kind = "linear probe" if head.get("task") == "LinearProbe" else "fine-tuned classifier"
    else:
        raise CheckpointError(
            f"{checkpoint} is neither a ser-ssl pretraining nor a probe/fine-tune checkpoint"
        )
    if not isinstance(spec, dict) or features is None or not isinstance(patch_frames, int):
        raise CheckpointError(
            f"{checkpoint} does not record its encoder config, log-mel settings and patch length (not "
            "written by `ser-ssl fit` through configs?); export a checkpoint of a run of the ser-ssl command"
        )
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ser_ssl_version": __version__,
        "kind": kind,
        "encoder": spec,
        "features": asdict(features),
        "patch_frames": patch_frames,
        "classifier": None
        if head is None
        else {
            "classes": list(head["classes"]),
            "multilabel": bool(head["multilabel"]),
            "batchnorm": "classifier.0.running_mean" in tensors,
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(out / WEIGHTS))
    (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    model = from_pretrained(
        out
    )  # the folder must load before it is called done, and the card counts its parameters
    (out / CARD).write_text(model_card(config, model, checkpoint, ckpt))
    return out


def from_pretrained(path: str | Path) -> PretrainedModel:
    """The model of an exported folder (``python -m ser_ssl.pretrained``), in eval mode on the CPU. A
    name that is no local path but reads ``owner/name[@revision]`` is pulled from the Hugging Face Hub
    (:func:`ser_ssl.hub.pull`)."""
    folder = Path(path)
    if isinstance(path, str) and not folder.exists():
        from ser_ssl import hub  # here: it imports this module, and huggingface-hub is optional

        if hub.is_hub_id(path):
            folder = hub.pull(path)
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise CheckpointError(f"{folder} is not an exported ser-ssl model (it needs {CONFIG} and {WEIGHTS})")
    config = json.loads((folder / CONFIG).read_text())
    if config.get("format") != FORMAT or config.get("format_version", math.inf) > FORMAT_VERSION:
        raise CheckpointError(
            f"{folder / CONFIG} is not a ser-ssl model of format {FORMAT_VERSION} or older (format "
            f"{config.get('format')!r} version {config.get('format_version')!r}); update ser-ssl"
        )
    check_trusted(config["encoder"], folder / CONFIG)
    encoder = build_module(config["encoder"])
    features = LogMelConfig(**config["features"])
    normalizer = Standardize(features.n_mels)
    head = config.get("classifier")
    classifier = None
    if head:
        dim, n = encoder.embed_dim, len(head["classes"])
        norm = [nn.BatchNorm1d(dim, affine=False)] if head["batchnorm"] else []
        classifier = nn.Sequential(*norm, nn.Linear(dim, n))
    tensors = load_file(str(folder / WEIGHTS))
    parts = {"encoder": encoder, "normalizer": normalizer, "classifier": classifier}
    for name, module in parts.items():
        if module is not None:
            module.load_state_dict(
                {k.removeprefix(f"{name}."): v for k, v in tensors.items() if k.startswith(f"{name}.")}
            )
    model = PretrainedModel(
        encoder,
        normalizer,
        features,
        config["patch_frames"],
        classifier,
        head["classes"] if head else (),
        bool(head and head["multilabel"]),
    )
    return model.eval()


class PortableExportError(UserError, RuntimeError):
    """A model that could not be written as TorchScript or ONNX, or whose file computes other numbers."""


class PortableModel(nn.Module):
    """What ``model.torchscript.pt`` and ``model.onnx`` compute: audio windows ``[B, window_samples]``
    at ``sample_rate`` -> embeddings ``[B, D]`` and, for a model with a classifier, also class
    probabilities ``[B, classes]`` (softmax, or sigmoid when multi-label). For windows of
    ``window_samples`` samples these are ``model.embed(windows)`` and ``model.classify(windows)``: a
    window of ``(patch_frames - 1) * hop_length`` samples gives exactly one window of log-mel frames.
    """

    def __init__(self, model: PretrainedModel) -> None:
        super().__init__()
        self.logmel, self.normalizer, self.encoder = model.logmel, model.normalizer, model.encoder
        self.classifier = model.classifier
        self.multilabel = model.multilabel
        self.window_samples = (model.patch_frames - 1) * model.logmel.config.hop_length

    def forward(self, audio: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(self.normalizer(self.logmel(audio).unsqueeze(1)))
        if self.classifier is None:
            return h
        logits = self.classifier(h)
        return h, torch.sigmoid(logits) if self.multilabel else F.softmax(logits, dim=-1)


def export_portable(
    model: str | Path | PretrainedModel,
    out_dir: str | Path | None = None,
    formats: Sequence[str] = ("torchscript", "onnx"),
) -> dict[str, Path]:
    """Write ``model.torchscript.pt`` and/or ``model.onnx`` of an exported folder (into that folder
    unless ``out_dir`` is given) or of a :class:`PretrainedModel` (into ``out_dir``).

    Both hold the whole path from audio to embedding (log-mel, standardisation, encoder) and the
    classifier when there is one: see :class:`PortableModel` for what they take and give; the batch
    size is free, the window length fixed. TorchScript needs only torch to run, ONNX only
    onnxruntime; writing ONNX needs ``onnx`` and ``onnxscript`` (``pip install 'ser-ssl[onnx]'``): the
    log-mel's STFT has complex values, which only ``torch.onnx.export(dynamo=True)`` translates, to
    opset 18. Each file is run once on random audio (ONNX when onnxruntime is installed) and must
    give the model's numbers. Returns the paths written, by format.
    """
    unknown = [f for f in formats if f not in PORTABLE]
    if unknown or not formats:
        raise ValueError(f"formats must be some of {sorted(PORTABLE)}, got {list(formats)}")
    if isinstance(model, PretrainedModel):
        if out_dir is None:
            raise ValueError("export_portable(model) needs out_dir (a folder to write the files into)")
    else:
        out_dir = model if out_dir is None else out_dir
        model = from_pretrained(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = PortableModel(copy.deepcopy(model).cpu().eval()).eval()
    outputs = ["embedding"] if net.classifier is None else ["embedding", "scores"]
    info = {
        "input": {"name": "audio", "shape": ["batch", net.window_samples], "sample_rate": model.sample_rate},
        "outputs": {"embedding": ["batch", model.encoder.embed_dim]}
        | ({"scores": ["batch", len(model.class_names)]} if net.classifier is not None else {}),
        "scores": None if net.classifier is None else ("sigmoid" if model.multilabel else "softmax"),
        "classes": model.class_names,
        "onnx_opset": ONNX_OPSET,
        "files": {f: PORTABLE[f] for f in formats},
    }
    example = torch.randn(2, net.window_samples)  # not 1: torch.export would fix the batch size at 1
    written = {}
    for fmt in formats:
        path = out / PORTABLE[fmt]
        write = _write_torchscript if fmt == "torchscript" else _write_onnx
        try:
            run = write(net, example, outputs, path, info)
        except PortableExportError:
            raise
        except Exception as err:
            cause = err
            while cause.__cause__ is not None:  # torch.onnx wraps torch.export's error
                cause = cause.__cause__
            reason = next(iter(str(cause).strip().splitlines()), "")
            raise PortableExportError(
                f"{type(model.encoder).__name__} could not be exported to {fmt}: "
                f"{type(cause).__name__}: {reason}"
            ) from err
        if run is not None:
            try:
                _check_parity(fmt, run, net)
            except PortableExportError:
                path.unlink()  # a file that computes other numbers is not left behind
                raise
        written[fmt] = path
    if (out / CONFIG).is_file():  # the exported folder: record what the files take and give
        config = json.loads((out / CONFIG).read_text())
        config["portable"] = info | {
            "files": {**config.get("portable", {}).get("files", {}), **info["files"]}
        }
        (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return written


def _write_torchscript(
    net: PortableModel, example: torch.Tensor, outputs: list[str], path: Path, info: dict
) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    with torch.no_grad(), warnings.catch_warnings():
        # LogMel's "shorter than one FFT?" test on the length: a constant, as the window length is
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(net, example)
    traced.save(str(path), _extra_files={"ser_ssl.json": json.dumps(info)})
    loaded = torch.jit.load(str(path))

    def run(audio: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            out = loaded(audio)
        return list(out) if isinstance(out, tuple) else [out]

    return run


def _write_onnx(
    net: PortableModel, example: torch.Tensor, outputs: list[str], path: Path, info: dict
) -> Callable[[torch.Tensor], list[torch.Tensor]] | None:
    try:
        import onnxscript  # noqa: F401  (torch.onnx.export(dynamo=True) needs it)
    except ImportError as err:
        raise PortableExportError(
            "ONNX export needs the onnx and onnxscript packages: pip install 'ser-ssl[onnx]'"
        ) from err
    program = torch.onnx.export(
        net,
        (example,),
        dynamo=True,
        opset_version=ONNX_OPSET,
        input_names=["audio"],
        output_names=outputs,
        dynamic_shapes=({0: "batch"},),
        verbose=False,
    )
    program.model.metadata_props["ser_ssl"] = json.dumps(info)
    program.save(str(path))
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda audio: [torch.from_numpy(o) for o in session.run(outputs, {"audio": audio.numpy()})]


def _check_parity(
    fmt: str, run: Callable[[torch.Tensor], list[torch.Tensor]], net: PortableModel, atol: float = 1e-4
) -> None:
    """The written file on random audio, batches of 3 and 1, against the model itself."""
    for batch in (3, 1):
        audio = torch.randn(batch, net.window_samples, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = net(audio)
        expected = list(expected) if isinstance(expected, tuple) else [expected]
        got = run(audio)
        worst = max((g - e).abs().max().item() for g, e in zip(got, expected, strict=True))
        if not worst <= atol * (1 + max(e.abs().max().item() for e in expected)):
            raise PortableExportError(
                f"the {fmt} file of {type(net.encoder).__name__} gives other numbers than the model "
                f"(batch of {batch}: differences up to {worst:.3g}); it cannot be exported faithfully"
            )


def model_card(config: dict, model: PretrainedModel, checkpoint: Path, ckpt: dict) -> str:
    """A README for the folder: what the model is, what it was trained on, its results, how to use it."""
    spec = config["encoder"]
    params = sum(p.numel() for p in model.encoder.parameters())
    data = ckpt.get("datamodule_hyper_parameters") or {}
    source = data.get("source") or data.get("manifest") or "the built-in synthetic set"
    if isinstance(source, dict):
        source = f"{source.get('class_path', '?')} {json.dumps(source.get('init_args', {}))}"
    lines = [
        f"# ser-ssl {config['kind']}",
        "",
        f"Exported by ser-ssl {__version__} from `{checkpoint.name}` (epoch {ckpt.get('epoch', '?')}, "
        f"step {ckpt.get('global_step', '?')}).",
        "",
        "| | |",
        "|---|---|",
        f"| encoder | `{spec['class_path']}` {json.dumps(spec.get('init_args', {}))} |",
        f"| parameters | {params:,} (encoder) |",
        f"| embedding | {model.encoder.embed_dim} dimensions, the mean over windows of "
        f"{config['patch_frames']} frames |",
        f"| log-mel | {', '.join(f'{k} {v}' for k, v in config['features'].items())} |",
        f"| trained on | {source} |",
    ]
    if config["classifier"]:
        head = config["classifier"]
        kind = "multi-label" if head["multilabel"] else "single-label"
        lines.append(f"| classes | {len(head['classes'])}, {kind}: {', '.join(head['classes'])} |")
    results = checkpoint.parent.parent / "test_metrics.json"
    if results.is_file():
        metrics = json.loads(results.read_text())
        lines += ["", "## Results", "", "Test metrics of the run (`test_metrics.json`):", ""]
        lines += [f"- {k}: {v:.4f}" for k, v in metrics.items() if isinstance(v, (int, float))]
    usage = (
        "scores = model.classify_file('sound.wav')  # {class: probability}"
        if config["classifier"]
        else ("embedding = model.embed_file('sound.wav')  # [D]")
    )
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import ser_ssl",
        "",
        "model = ser_ssl.from_pretrained('path/to/this/folder')",
        usage,
        "encoder = model.encoder  # a torch.nn.Module: [B, 1, n_mels, frames] -> [B, D]",
        "```",
        "",
    ]
    return "\n".join(lines)


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ser_ssl.pretrained",
        description="Export a ser-ssl checkpoint (pretraining, probe or fine-tune) to a portable folder: "
        "model.safetensors, config.json and a model card README.md; with --torchscript and --onnx also "
        "files that run without ser-ssl.",
    )
    parser.add_argument("checkpoint", help="a .ckpt written by ser-ssl fit")
    parser.add_argument("out_dir", help="the folder to write")
    parser.add_argument(
        "--torchscript",
        action="store_true",
        help=f"also write {PORTABLE['torchscript']} (runs with torch only)",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help=f"also write {PORTABLE['onnx']} (runs with onnxruntime; needs pip install 'ser-ssl[onnx]')",
    )
    args = parser.parse_args(argv)
    out = export(args.checkpoint, args.out_dir)
    formats = [f for f in PORTABLE if getattr(args, f)]
    portable = export_portable(out, formats=formats) if formats else {}
    print(f"wrote {out}: {', '.join([WEIGHTS, CONFIG, CARD, *(p.name for p in portable.values())])}")


if __name__ == "__main__":
    from ser_ssl.cli import exit_on_user_error

    exit_on_user_error(main, prog="python -m ser_ssl.pretrained")
