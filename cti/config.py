"""Typed configuration: defaults < config file (TOML) < environment.

Environment variables are ``HOTLINE_<FIELD>`` (e.g. ``HOTLINE_AMI_HOST``),
plus the conventional ``DATABASE_URL``.  Secrets (AMI secret, database URL)
have no real-looking defaults.  An invalid setting raises :class:`ConfigError`
whose message is one line naming the setting.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping


class ConfigError(ValueError):
    """One clear line naming the bad setting."""


@dataclass(frozen=True)
class Config:
    # AMI (Asterisk Manager Interface)
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_username: str = "hotline-cti"
    ami_secret: str = ""  # no default secret: serve refuses to start without one
    ami_backoff_initial_s: float = 0.5
    ami_backoff_max_s: float = 30.0
    ami_max_frame_bytes: int = 256 * 1024
    # FastAGI (issue #4 uses it)
    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    # IVR prompts: written where Asterisk reads sounds (demo: <state_dir>/sounds)
    sounds_dir: str = "/var/lib/asterisk/sounds/hotline"
    tts_voice: str = "cmn-latn-pinyin"
    # the utility's own telephone area code, for 7–8 digit local numbers (e.g. "0773")
    area_code: str = ""
    # database
    database_url: str = ""  # empty → embedded PostgreSQL under state_dir
    db_pool_min: int = 1
    db_pool_max: int = 10
    # connections kept for the screen-pops alone (lookup + draft), so that
    # background writes (recordings, call rows, reports) never make a ringing
    # agent wait for a connection; 0: the pops share the pool above
    db_pop_pool: int = 12
    state_dir: str = ".state"
    # AMI frames read but not yet processed that may wait in memory (about
    # 1.3 KB each: 250 000 ≈ 300 MB, a minute of a 200 calls/s surge beyond
    # what the service handles).  A backlog is never dropped and keeps the
    # link to Asterisk up; only near this bound does the AMI reader pause
    # (Asterisk then drops the link after its writetimeout: resync + CDR)
    pipeline_max_frames: int = 250_000
    # web
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # domain
    recent_orders_limit: int = 5
    default_region: str = "CN"
    # wallboard and surge mode (queues/, issue 6)
    sl_threshold_s: int = 20  # service level: answered within this many seconds
    # queues.conf wrapuptime per queue (Asterisk does not report it over AMI)
    queue_wrapup_s: str = "repair=10,complaint=30,enquiry=5"
    surge_on_waiting: int = 10  # surge on when this many callers wait (all queues) ...
    surge_on_longest_wait_s: float = 120.0  # ... or someone has waited this long
    surge_off_waiting: int = 3  # off again only when waiting <= this ...
    surge_off_longest_wait_s: float = 45.0  # ... and longest wait <= this ...
    surge_off_after_s: float = 60.0  # ... for this long ...
    surge_min_on_s: float = 120.0  # ... and surge has been on at least this long
    # call recordings (recordings/, issue 7): where MixMonitor writes (extensions.conf
    # RECORDINGS_DIR, as this process sees it), the same directory as Asterisk names it
    # if it differs (another mount point; "" = the same), where compact copies go
    # ("" = beside the originals), how long recordings are kept, the compact format
    recordings_dir: str = "/var/spool/asterisk/recordings/hotline"
    recordings_asterisk_dir: str = ""
    recordings_archive_dir: str = ""
    recording_retention_days: int = 365
    recording_compact_format: str = "opus"  # opus | mp3 | "" (keep WAV)
    # logging
    log_level: str = "INFO"
    log_json: bool | None = None  # None → JSON when stdout is not a TTY
    # demo / simulator
    sim_calls_per_min: float = 30.0  # demo traffic (virtual minutes at sim_speed)
    sim_speed: float = 5.0  # demo: 5 simulated seconds per real second, so pops come often
    sim_abandon_ratio: float = 0.15
    # several service processes on one PostgreSQL (cti.cluster): this node's name
    node_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")

    def redacted(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if out["ami_secret"]:
            out["ami_secret"] = "***"
        if out["database_url"]:
            out["database_url"] = _redact_url(out["database_url"])
        return out


def _redact_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


_ENV_PREFIX = "HOTLINE_"


def _coerce(name: str, typ: Any, raw: Any) -> Any:
    t = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    try:
        if t in ("int",):
            if isinstance(raw, bool):
                raise ValueError
            return int(raw)
        if t in ("float",):
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if t in ("bool", "bool | None"):
            if raw is None or (t == "bool | None" and str(raw).strip().lower() in ("", "auto")):
                return None
            if isinstance(raw, bool):
                return raw
            s = str(raw).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if t in ("str",):
            if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
                raise ValueError
            return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"invalid setting {name}={raw!r}: expected {t}") from None
    raise ConfigError(f"setting {name} has unsupported type {t}")


def _validate(cfg: Config) -> None:
    def bad(name: str, why: str) -> None:
        raise ConfigError(f"invalid setting {name}={getattr(cfg, name)!r}: {why}")

    for port in ("ami_port", "agi_port", "http_port"):
        if not 0 <= getattr(cfg, port) <= 65535:
            bad(port, "must be a TCP port 0..65535")
    if cfg.ami_backoff_initial_s <= 0:
        bad("ami_backoff_initial_s", "must be > 0")
    if cfg.ami_backoff_max_s < cfg.ami_backoff_initial_s:
        bad("ami_backoff_max_s", "must be >= ami_backoff_initial_s")
    if cfg.ami_max_frame_bytes < 1024:
        bad("ami_max_frame_bytes", "must be >= 1024")
    if not 1 <= cfg.db_pool_min <= cfg.db_pool_max:
        bad("db_pool_min", "need 1 <= db_pool_min <= db_pool_max")
    if not 0 <= cfg.db_pop_pool <= 100:
        bad("db_pop_pool", "need 0 <= db_pop_pool <= 100")
    if not 1_000 <= cfg.pipeline_max_frames <= 10_000_000:
        bad("pipeline_max_frames", "need 1 000 <= pipeline_max_frames <= 10 000 000")
    if cfg.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        bad("log_level", "one of DEBUG, INFO, WARNING, ERROR")
    if cfg.database_url and not cfg.database_url.startswith(("postgres://", "postgresql://")):
        raise ConfigError("invalid setting database_url: must start with postgresql://")
    if not cfg.node_id or len(cfg.node_id) > 64 or not cfg.node_id.isprintable():
        bad("node_id", "1..64 printable characters")
    if cfg.sim_speed <= 0:
        bad("sim_speed", "must be > 0")
    if not 0 <= cfg.sim_abandon_ratio <= 1:
        bad("sim_abandon_ratio", "must be between 0 and 1")
    if cfg.area_code and not (cfg.area_code.isdigit() and cfg.area_code.startswith("0") and 3 <= len(cfg.area_code) <= 4):
        bad("area_code", "a Chinese area code such as 0773")
    if cfg.recent_orders_limit < 0:
        bad("recent_orders_limit", "must be >= 0")
    if not 1 <= cfg.recording_retention_days <= 36500:
        bad("recording_retention_days", "must be 1..36500 days")
    if cfg.recording_compact_format not in ("opus", "mp3", ""):
        bad("recording_compact_format", 'one of "opus", "mp3", "" (no transcoding)')
    if cfg.recordings_asterisk_dir and not cfg.recordings_asterisk_dir.startswith("/"):
        bad("recordings_asterisk_dir", "must be an absolute path (as Asterisk names it)")
    if not cfg.recordings_dir:
        bad("recordings_dir", "must not be empty")
    if not 1 <= cfg.sl_threshold_s <= 3600:
        bad("sl_threshold_s", "must be 1..3600 seconds")
    from queues.model import parse_wrapup, surge_settings_of

    try:
        parse_wrapup(cfg.queue_wrapup_s)
    except ValueError as exc:
        bad("queue_wrapup_s", f"expected queue=seconds,... ({exc})")
    try:
        surge_settings_of(cfg).check()
    except ValueError as exc:
        bad("surge_on_waiting", str(exc))


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Config:
    """Build the configuration.  ``path`` (or ``HOTLINE_CONFIG``) is a TOML
    file with a flat table of the field names; unknown keys are an error."""
    env = os.environ if env is None else env
    types = {f.name: f.type for f in fields(Config)}
    values: dict[str, Any] = {}
    path = path or env.get("HOTLINE_CONFIG") or None
    if path:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {p} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
        for key, raw in data.items():
            if key not in types:
                raise ConfigError(f"unknown setting {key!r} in {p}")
            values[key] = _coerce(key, types[key], raw)
    for name, typ in types.items():
        env_name = _ENV_PREFIX + name.upper()
        if env_name in env:
            values[name] = _coerce(env_name, typ, env[env_name])
    if env.get("DATABASE_URL"):
        values["database_url"] = env["DATABASE_URL"]
    for key, raw in overrides.items():
        if key not in types:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = raw
    cfg = Config(**values)
    _validate(cfg)
    return cfg
