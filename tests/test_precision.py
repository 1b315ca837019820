"""``auto_precision``: the precision chosen per (faked) hardware, and the CLI flag that applies it."""

import pytest

import ser_ssl.cli as cli
from ser_ssl.precision import Hardware, choose_precision, cpu_flags, detect
from tests.conftest import SMALL_ENCODER, tiny_args

AVX2 = frozenset({"fpu", "sse2", "avx2", "fma"})
AMX = AVX2 | {"avx512f", "amx_tile", "amx_bf16", "amx_int8"}


@pytest.mark.parametrize(
    ("hw", "expected"),
    [
        (Hardware("cuda", "NVIDIA H200", (9, 0)), "bf16-mixed"),
        (Hardware("cuda", "NVIDIA A100", (8, 0)), "bf16-mixed"),
        (Hardware("cuda", "Tesla V100", (7, 0)), "16-mixed"),
        (Hardware("cuda", "Tesla P100", (6, 0)), "32-true"),
        (Hardware("cpu", "Intel Xeon", cpu_flags=AMX), "bf16-mixed"),
        (Hardware("cpu", "AMD EPYC", cpu_flags=AVX2), "32-true"),
        (Hardware("mps"), "32-true"),
    ],
)
def test_precision_follows_the_hardware(hw, expected):
    precision, why = choose_precision(hw)
    assert precision == expected and why


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 amx_bf16\n")
    assert cpu_flags(info) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_detect_without_a_gpu_is_the_cpu():
    assert detect("cpu").accelerator == "cpu"


@pytest.mark.parametrize(("flags", "expected"), [(AMX, "bf16-mixed"), (AVX2, "32-true")])
def test_the_cli_flag_sets_the_trainer_precision(tmp_path, tiny_data, monkeypatch, flags, expected):
    monkeypatch.setattr(cli, "detect", lambda accelerator: Hardware("cpu", "a test CPU", cpu_flags=flags))
    args = tiny_args("pretrain", tmp_path / "run", tiny_data, tmp_path / "cache") + SMALL_ENCODER
    run = cli.cli_main(["fit", *args, "--auto_precision", "true", "--trainer.fast_dev_run", "1"])
    assert run.trainer.precision == expected
