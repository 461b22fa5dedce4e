"""agent.toml: pydantic v2 data (``extra="forbid"``), read from TOML, overridable by ``EDGE_*`` variables.

Validators check values only; reading secrets and keys happens when the agent starts
(:meth:`AgentConfig.cloud_token`), so a config can be checked on a machine without the files.

Overrides: ``EDGE_<KEY>`` for a top-level key (``EDGE_DEVICE_ID``, ``EDGE_STATE_DIR``) and
``EDGE_<SECTION>__<KEY>`` for a key of a section (``EDGE_ROUTER__MODE=online``,
``EDGE_UPDATES__POLL_INTERVAL_S=600``); values are JSON when they parse as JSON (numbers,
booleans, lists), text otherwise. ``EDGE_CLOUD_TOKEN`` is the cloud token (a secret that should
stay out of the file); the MQTT password is read by telemetry from ``EDGE_MQTT_PASSWORD``.
Other ``EDGE_*`` variables (``EDGE_OUTBOX``; the cloud service reads ``EDGE_CLOUD_*``) are left alone.

Relative paths in the file are relative to the file's folder, so a config and its keys can move
together.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge_runtime import describe_validation_error
from edge_runtime.backends import BACKEND_NAMES

from ..telemetry import validate_device_id
from ._errors import AgentConfigError

__all__ = [
    "EXAMPLE_TOML",
    "AgentConfig",
    "BreakerConfig",
    "CloudConfig",
    "HomeAssistantConfig",
    "HttpConfig",
    "ModelConfig",
    "RouterConfig",
    "SourceConfig",
    "TelemetrySection",
    "UpdatesConfig",
    "load_config",
]

DEFAULT_STATE_DIR = Path("/var/lib/edge")

#: A complete agent.toml for a Raspberry Pi under systemd (`edge agent example-config` prints it):
#: every key of every section, each with a comment (tests/agent/test_policy_cli.py checks it).
EXAMPLE_TOML = """\
# /etc/edge/agent.toml: the device agent (`edge agent --config /etc/edge/agent.toml`).
# Every key is listed with a one-line comment. Keys set to another value than their default say
# "default: ..."; commented-out keys are unset (their default) and show an example value.
# Relative paths are relative to this file's folder. Any key can be overridden from the
# environment: EDGE_DEVICE_ID, EDGE_<SECTION>__<KEY> (EDGE_ROUTER__MODE=offline).
device_id = "greenhouse-1"          # required; one MQTT topic level: letters, digits, . _ -
state_dir = "/var/lib/edge"         # models/, staging/, pointers, state.json, outbox.db
outputs = []                        # extra local outputs: "-", "/var/lib/edge/records.jsonl", "sqlite:///..."

[model]
bundle = "/opt/edge/bundles/mobilenet_v2-v1.tar.gz"   # required; first model and last fallback (signed)
trusted_keys = ["/etc/edge/keys/release.pub"]         # pinned Ed25519 keys: nothing else is run (default: [], no check)
# name = "mobilenet_v2"             # updates for another model name are refused (default: the bundle's own name)
# backend = "litert"                # litert | onnxruntime | opencv-dnn (default: the profile's order)
threads = 4                         # inference threads (default: the profile's, else one per core)
# profile = "raspberry-pi-4"        # device profile (default: detected)
# top_k = 5                         # labels per record (default: the bundle's postprocess.top_k)

[source]
spec = "picamera"                   # required; or 0 (USB camera), rtsp://..., a video file, a directory
repeat = false                      # start again at the first image when a file source ends
# workers = 2                       # image decoding processes (default: chosen from the free cores)
# limit = 1000                      # stop after this many frames, then exit cleanly (default: never)

[router]
mode = "cascade"                    # offline | online | cascade (default: "offline")
threshold = 0.6                     # cascade: ask the cloud below this local top score
deadline_ms = 400                   # no frame waits on the network longer than this (default: 500)
# cloud_model = "mobilenet_v2"      # the cloud model to ask (default: the local model's name)
top_k = 5                           # labels asked of the cloud
image_format = "jpeg"               # jpeg | png: how frames are sent to the cloud
jpeg_quality = 90                   # 1-100
max_in_flight = 4                   # cloud calls at once; more frames than this answer locally

[router.breaker]
failures = 3                        # failures in a row that open the breaker
backoff_s = 5.0                     # first wait before a probe (doubles up to backoff_max_s)
backoff_max_s = 120.0               # longest wait between probes
jitter = 0.5                        # random fraction of each wait, so a fleet does not probe in lockstep

[cloud]
url = "https://edge-cloud.example.com"   # online inference and the model registry (default: none, offline)
# token = "..."                     # the device token; prefer token_file or EDGE_CLOUD_TOKEN (default: none)
token_file = "/etc/edge/device.token"   # a file holding the device token, read at start (default: none)
timeout_s = 30.0                    # registry calls (update checks) give up after this

[telemetry]
enabled = true                      # results, metrics, events and status over MQTT (when mqtt_url is set)
mqtt_url = "mqtts://broker.example.com:8883"   # mqtt:// or mqtts:// (default: none, telemetry off)
username = "greenhouse-1"           # MQTT user, usually the device id (default: none)
password_file = "/etc/edge/mqtt.password"   # or EDGE_MQTT_PASSWORD (default: none)
ca_file = "/etc/edge/ca.pem"        # CA for mqtts:// (default: none, the system's CAs)
# cert_file = "/etc/edge/device.crt"   # client certificate for mutual TLS (default: none)
# key_file = "/etc/edge/device.key"    # its private key (default: none)
# outbox = "/var/lib/edge/outbox.db"   # the durable outbox (default: <state_dir>/outbox.db)
# confirm = "broker"                # when rows leave the outbox: ingester | broker (default: auto)
metrics_interval_s = 60.0           # how often edge/<device>/metrics is published
linger_s = 0.5                      # wait this long to batch results into one message
drain_s = 2.0                       # at SIGTERM, time to drain the outbox before leaving the rest
commands = true                     # listen on edge/<device>/cmd/update for update notices

[updates]
# enabled = true                    # signed model updates (default: on when cloud.url is set)
poll_interval_s = 3600.0            # plus MQTT notices on edge/<device>/cmd/update
first_poll_s = 0.0                  # first poll this long after the start
max_bundle_bytes = 268435456        # bigger bundles are refused (default: 536870912, 512 MiB)
download_timeout_s = 900.0          # one download gives up after this
require_expiry = true               # refuse bundles without expires (`edge bundle --expires 90d`)
require_samples = true              # refuse bundles without samples (`edge bundle --sample IMG`)
expiry_grace_s = 300.0              # allowed clock skew when checking expiry
rollback_after_failures = 5         # failing frames in a row after a switch that roll it back
probation_frames = 500              # good frames that confirm a new model (default: 100)
max_trial_starts = 3                # crash-loop restarts during probation that roll it back at start

[http]
enabled = true                      # GET /health and /latest (default: false)
host = "127.0.0.1"                  # listen address; keep it local unless a firewall guards it
port = 8780                         # 0: any free port

[home_assistant]
enabled = false                     # MQTT discovery: the device and its sensors appear in Home Assistant
discovery_prefix = "homeassistant"  # Home Assistant's discovery topic prefix
# name = "Greenhouse camera"        # the device's name in Home Assistant (default: the device id)
# count_labels = ["person", "car"]  # a detector: one sensor per label, counting its objects in the latest frame
"""
ENV_PREFIX = "EDGE_"
#: secrets with a short variable of their own (the usual names in a systemd EnvironmentFile)
ENV_ALIASES = {"EDGE_CLOUD_TOKEN": ("cloud", "token")}


def _resolve_path(v: Any, info: ValidationInfo) -> Any:
    """Relative paths are taken relative to the config file's folder (passed as context; no I/O)."""
    base = (info.context or {}).get("base_dir") if info.context else None
    if v is None or base is None:
        return v
    p = Path(v)
    return p if p.is_absolute() else Path(base) / p


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    """The model the device runs first, and falls back to when nothing installed is usable."""

    #: a bundle directory or .tar.gz: adopted as the first installed version, and the last fallback
    bundle: Path
    #: the model's name; updates for another name are refused (default: the bundle's own name)
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    #: Ed25519 public keys (PEM) bundles must be signed with; empty means "do not check signatures"
    trusted_keys: list[Path] = Field(default_factory=list)
    #: one of the runtime's registered backends (edge_runtime.backends.BACKEND_NAMES)
    backend: str | None = None
    threads: int | None = Field(None, ge=1, le=256)
    profile: str | None = None
    top_k: int | None = Field(None, ge=1, le=1000)

    _paths = field_validator("bundle", mode="after")(_resolve_path)

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str | None) -> str | None:
        if v is not None and v not in BACKEND_NAMES:
            raise ValueError(f"unknown backend {v!r}; known: {', '.join(BACKEND_NAMES)}")
        return v

    @field_validator("trusted_keys", mode="after")
    @classmethod
    def _keys(cls, v: list[Path], info: ValidationInfo) -> list[Path]:
        return [_resolve_path(p, info) for p in v]


class SourceConfig(_Section):
    #: camera index (``0``), ``picamera``, an rtsp:// URL, a video file, an image directory or glob
    spec: str = Field(min_length=1)
    #: start again at the first image when a file source ends (kiosk demos, benchmarks)
    repeat: bool = False
    workers: int | None = Field(None, ge=1, le=64)
    #: stop after this many frames (tests, benchmarks); the agent then exits cleanly
    limit: int | None = Field(None, ge=1)


class BreakerConfig(_Section):
    """Circuit breaker of the cloud path: open after ``failures`` in a row, probe after a backoff."""

    failures: int = Field(3, ge=1, le=1000)
    backoff_s: float = Field(5.0, gt=0, le=3600)
    backoff_max_s: float = Field(120.0, gt=0, le=86400)
    #: fraction of each backoff that is random, so a fleet does not probe in lockstep
    jitter: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> BreakerConfig:
        if self.backoff_max_s < self.backoff_s:
            raise ValueError("backoff_max_s must be >= backoff_s")
        return self


class RouterConfig(_Section):
    """Hybrid routing. ``offline``: local only. ``online``: the cloud answers when it can within
    ``deadline_ms``, the local model otherwise. ``cascade``: local first, the cloud only when the
    local top score is below ``threshold`` and the cloud is reachable."""

    mode: Literal["offline", "online", "cascade"] = "offline"
    threshold: float = Field(0.6, ge=0, le=1)
    deadline_ms: float = Field(500.0, gt=0, le=60_000)
    #: the cloud model to ask (default: the local model's name)
    cloud_model: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    top_k: int = Field(5, ge=1, le=1000)
    image_format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = Field(90, ge=1, le=100)
    #: cloud calls in flight at once; more frames than this answer locally at once
    max_in_flight: int = Field(4, ge=1, le=64)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)


class CloudConfig(_Section):
    """The cloud service: online inference and the model registry."""

    url: str | None = None
    token: SecretStr | None = None
    #: a file holding the device token (e.g. a systemd credential); read at start
    token_file: Path | None = None
    timeout_s: float = Field(30.0, gt=0, le=3600)

    _paths = field_validator("token_file", mode="after")(_resolve_path)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{v!r} must look like http(s)://host[:port]")
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise ValueError(f"{v!r}: bad port ({exc})") from exc
        return v.rstrip("/")

    @model_validator(mode="after")
    def _check(self) -> CloudConfig:
        if self.token is not None and self.token_file is not None:
            raise ValueError("give token or token_file, not both")
        return self


class TelemetrySection(_Section):
    """MQTT telemetry through the durable outbox (see edge_device.telemetry)."""

    enabled: bool = True
    mqtt_url: str | None = None
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    #: default: <state_dir>/outbox.db
    outbox: Path | None = None
    #: when rows leave the outbox (edge_device.telemetry.DeliveryConfig): ``auto``, at the ingester's
    #: confirmation when one announces itself on edge/<device>/cmd/ingest, else at the broker's PUBACK;
    #: ``ingester`` (old name ``cloud``): always wait for the ingester; ``broker``: always at the PUBACK
    confirm: Literal["auto", "ingester", "broker", "cloud"] = "auto"
    metrics_interval_s: float = Field(60.0, gt=0, le=86400)
    linger_s: float = Field(0.5, ge=0, le=600)
    #: how long SIGTERM waits for the outbox to drain before leaving the rest for the next start
    drain_s: float = Field(2.0, ge=0, le=600)
    #: listen on edge/<device>/cmd/update for update notices (a second small MQTT connection)
    commands: bool = True

    _paths = field_validator("password_file", "ca_file", "cert_file", "key_file", "outbox",
                             mode="after")(_resolve_path)

    @property
    def active(self) -> bool:
        return self.enabled and self.mqtt_url is not None


class UpdatesConfig(_Section):
    """Signed model updates from the registry (TUF's client rules, cut to what a model needs)."""

    #: default: on when cloud.url is set
    enabled: bool | None = None
    poll_interval_s: float = Field(3600.0, ge=0.05, le=7 * 86400)
    #: first poll this long after the start (0: at once)
    first_poll_s: float = Field(0.0, ge=0, le=86400)
    max_bundle_bytes: int = Field(512 * 1024**2, ge=1024)
    download_timeout_s: float = Field(900.0, gt=0, le=86400)
    #: refuse bundles without an expiry date (else a frozen registry can feed an old bundle forever)
    require_expiry: bool = True
    #: refuse bundles without sample inputs for the health check
    require_samples: bool = True
    #: allowed clock skew when checking expiry
    expiry_grace_s: float = Field(300.0, ge=0, le=30 * 86400)
    #: consecutive failing frames of a new model, during its probation, that roll it back
    rollback_after_failures: int = Field(5, ge=1, le=100_000)
    #: good frames after which a new model is confirmed (no more automatic rollback)
    probation_frames: int = Field(100, ge=1, le=10_000_000)
    #: unclean restarts during probation (crash loop) after which it is rolled back at start
    max_trial_starts: int = Field(3, ge=1, le=1000)


class HttpConfig(_Section):
    """A small local HTTP endpoint: ``/health`` and ``/latest`` (kiosk screen, Home Assistant)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8780, ge=0, le=65535)


class HomeAssistantConfig(_Section):
    """Home Assistant MQTT discovery: each device shows up with sensors (label, score, model version...)."""

    enabled: bool = False
    discovery_prefix: str = Field("homeassistant", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    #: a name for the device in Home Assistant (default: the device id)
    name: str | None = None
    #: for a detector: one count sensor per label (objects of that label in the latest frame)
    count_labels: list[Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]] = Field(
        default_factory=list, max_length=50)


class AgentConfig(BaseModel):
    """Everything ``edge agent`` is told. See the module docstring for overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: str
    state_dir: Path = DEFAULT_STATE_DIR
    model: ModelConfig
    source: SourceConfig
    router: RouterConfig = Field(default_factory=RouterConfig)
    cloud: CloudConfig = Field(default_factory=CloudConfig)
    telemetry: TelemetrySection = Field(default_factory=TelemetrySection)
    updates: UpdatesConfig = Field(default_factory=UpdatesConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    home_assistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig)
    #: extra local outputs for every record: ``-`` (stdout), FILE.jsonl, sqlite:///FILE.db
    outputs: list[str] = Field(default_factory=list)

    _paths = field_validator("state_dir", mode="after")(_resolve_path)

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, v: str) -> str:
        return validate_device_id(v)

    @model_validator(mode="after")
    def _check(self) -> AgentConfig:
        if self.router.mode != "offline" and self.cloud.url is None:
            raise ValueError(f"router.mode = {self.router.mode!r} needs cloud.url (or set router.mode = 'offline')")
        if self.updates.enabled and self.cloud.url is None:
            raise ValueError("updates.enabled needs cloud.url (the registry to poll)")
        if self.updates_active and not self.model.trusted_keys:
            raise ValueError("updates need model.trusted_keys (the Ed25519 keys releases are signed with); "
                             "or set updates.enabled = false")
        if self.home_assistant.enabled and not self.telemetry.active:
            raise ValueError("home_assistant.enabled needs telemetry.mqtt_url (discovery and states go over MQTT)")
        return self

    @property
    def updates_active(self) -> bool:
        enabled = self.updates.enabled if self.updates.enabled is not None else self.cloud.url is not None
        return bool(enabled)

    @property
    def outbox_path(self) -> Path:
        return self.telemetry.outbox or self.state_dir / "outbox.db"

    def cloud_token(self) -> str | None:
        """The device token: from ``token``, ``token_file`` (read now) or ``EDGE_CLOUD_TOKEN``."""
        if self.cloud.token is not None:
            return self.cloud.token.get_secret_value()
        path = self.cloud.token_file
        if path is not None:
            try:
                text = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise AgentConfigError(f"cloud.token_file {path}: cannot read ({exc.strerror})") from exc
            except UnicodeDecodeError as exc:
                raise AgentConfigError(f"cloud.token_file {path}: not UTF-8 text") from exc
            if not text:
                raise AgentConfigError(f"cloud.token_file {path}: is empty")
            return text
        return None


# -- loading -----------------------------------------------------------------------------------
def load_config(path: str | Path | None = None, *, data: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read ``path`` (TOML) or take ``data``, apply ``EDGE_*`` overrides, validate.

    Raises :class:`AgentConfigError` naming every wrong key (up to a few) and what is wrong with it.
    """
    env = os.environ if environ is None else environ
    where = str(path) if path is not None else "agent config"
    base_dir: Path | None = None
    if path is not None:
        p = Path(path)
        try:
            raw = p.read_bytes()
        except FileNotFoundError as exc:
            raise AgentConfigError(f"{p}: no such config file") from exc
        except OSError as exc:
            raise AgentConfigError(f"{p}: cannot read ({exc.strerror})") from exc
        try:
            doc: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise AgentConfigError(f"{p}: not UTF-8 text") from exc
        except tomllib.TOMLDecodeError as exc:
            raise AgentConfigError(f"{p}: not valid TOML: {exc}") from exc
        base_dir = p.resolve().parent
    else:
        doc = _deep_copy(dict(data or {}))
    origins = _apply_env(doc, env)
    try:
        return AgentConfig.model_validate(doc, context={"base_dir": base_dir})
    except ValidationError as exc:
        # Every key named against AgentConfig: the value given (never a secret), the variable it
        # came from, the closest known key for a misspelt one.
        raise AgentConfigError(describe_validation_error(exc, "agent config", where=where, limit=6, model=AgentConfig,
                                                         origins=origins, show_values=True)) from exc


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def _env_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _apply_env(doc: dict[str, Any], env: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """Overlay EDGE_* variables on the parsed file; return which key came from which variable."""
    top = AgentConfig.model_fields
    origins: dict[tuple[str, ...], str] = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        if name in ENV_ALIASES:
            loc: tuple[str, ...] = ENV_ALIASES[name]
            value: Any = env[name]  # a secret is text as it is, never JSON-parsed
        else:
            parts = name[len(ENV_PREFIX):].lower().split("__")
            if parts[0] not in top:
                continue  # somebody else's variable (EDGE_OUTBOX, EDGE_PROFILE...; the service's are EDGE_CLOUD_*)
            loc = tuple(parts)
            value = _env_value(env[name])
        target = doc
        for key in loc[:-1]:
            nxt = target.get(key)
            if not isinstance(nxt, dict):
                nxt = {}
                target[key] = nxt
            target = nxt
        target[loc[-1]] = value
        origins[loc] = name
    return origins
