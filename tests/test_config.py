import pytest

from cti.config import ConfigError, load_config


def test_defaults_have_no_real_looking_secrets():
    cfg = load_config(env={})
    assert cfg.ami_secret == ""
    assert cfg.database_url == ""
    assert cfg.ami_port == 5038 and cfg.agi_port == 4573


def test_file_then_environment_override(tmp_path):
    f = tmp_path / "hotline.toml"
    f.write_text('ami_host = "10.0.0.5"\nami_port = 5039\nhttp_port = 9000\n', encoding="utf-8")
    cfg = load_config(f, env={"HOTLINE_AMI_PORT": "5040", "DATABASE_URL": "postgresql://u:p@db/x"})
    assert cfg.ami_host == "10.0.0.5"
    assert cfg.ami_port == 5040          # env beats file
    assert cfg.http_port == 9000
    assert cfg.database_url == "postgresql://u:p@db/x"
    assert cfg.redacted()["database_url"] == "postgresql://u:***@db/x"


@pytest.mark.parametrize("env,name", [
    ({"HOTLINE_AMI_PORT": "five"}, "HOTLINE_AMI_PORT"),
    ({"HOTLINE_AMI_PORT": "70000"}, "ami_port"),
    ({"HOTLINE_LOG_LEVEL": "LOUD"}, "log_level"),
    ({"DATABASE_URL": "mysql://x"}, "database_url"),
    ({"HOTLINE_SIM_ABANDON_RATIO": "2"}, "sim_abandon_ratio"),
])
def test_invalid_setting_gives_one_line_naming_it(env, name):
    with pytest.raises(ConfigError) as ei:
        load_config(env=env)
    msg = str(ei.value)
    assert name in msg and "\n" not in msg


def test_unknown_key_in_file_is_refused(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("ami_hots = 'x'\n")
    with pytest.raises(ConfigError, match="ami_hots"):
        load_config(f, env={})


def test_cli_rejects_bad_setting_with_nonzero_exit(capsys, monkeypatch):
    from cti.__main__ import main

    monkeypatch.setenv("HOTLINE_HTTP_PORT", "-1")
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "http_port" in err[0]


def test_serve_without_ami_secret_refuses_to_start(capsys, monkeypatch):
    from cti.__main__ import main

    monkeypatch.delenv("HOTLINE_AMI_SECRET", raising=False)
    assert main(["serve"]) == 2
    assert "ami_secret" in capsys.readouterr().err


def test_serve_with_unreachable_database_gives_one_clear_line(capsys, monkeypatch):
    from cti.__main__ import main

    monkeypatch.setenv("HOTLINE_AMI_SECRET", "x")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@127.0.0.1:1/none")
    monkeypatch.setenv("HOTLINE_HTTP_PORT", "0")
    assert main(["serve"]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    assert len(err) == 1 and "database unreachable" in err[0] and "pw" not in err[0]


def test_example_config_file_is_valid():
    from pathlib import Path

    cfg = load_config(Path(__file__).parent.parent / "hotline.example.toml", env={})
    assert cfg.ami_username == "hotline-cti" and cfg.ami_secret == ""
