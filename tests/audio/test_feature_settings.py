"""Feature settings that cannot give a finite, meaningful log-mel are refused before any audio is read."""

import pytest

from ser_ssl.audio import LogMelConfig
from ser_ssl.cli import main
from ser_ssl.errors import ConfigError
from tests.conftest import tiny_args


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"f_max": 12000.0}, r"f_max <= sample_rate / 2 \(11025 Hz\)"),
        ({"f_min": 500.0, "f_max": 400.0}, "f_min < f_max"),
        ({"hop_length": 0}, "hop_length must be positive"),
        ({"log_offset": 0.0}, "log_offset must be positive"),
        ({"win_length": 4096}, "win_length must be in 1..n_fft"),
        ({"n_mels": 0}, "n_mels must be positive"),
        ({"sample_rate": 0}, "sample_rate must be positive"),
    ],
)
def test_impossible_settings_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        LogMelConfig(**settings)


def test_the_cli_names_the_setting_in_one_line(tmp_path, tiny_data, monkeypatch):
    args = tiny_args("pretrain", tmp_path / "run", tiny_data, tmp_path / "cache")
    monkeypatch.setattr("sys.argv", ["ser-ssl", "fit", *args, "--data.init_args.features.f_max", "20000"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert "ser-ssl: error: data.init_args.features: need 0 <= f_min < f_max" in str(exit_.value)
    assert not (tmp_path / "cache").exists()  # refused before any audio was read
