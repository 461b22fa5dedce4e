"""Service configuration: pydantic data read from TOML, overridable by ``EDGE_CLOUD_*`` variables.

The prefix is the cloud side's own: the device's settings are ``EDGE_*`` (agent.toml overrides,
``EDGE_MQTT_PASSWORD``...), and a machine that runs both must not give one's value to the other.

The embedded default needs no setting at all (a SQLite file and a bundle directory under
``./edge-cloud``); production sets ``database_url`` to PostgreSQL and ``storage = "s3"``.
Validators only check values: reading files (trusted keys) happens when the service starts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

__all__ = ["CONFIG_ENV", "ENV_PREFIX", "ServiceSettings", "legacy_env_names"]

#: every setting ``x`` is overridden by ``EDGE_CLOUD_X``
ENV_PREFIX = "EDGE_CLOUD_"
#: the TOML file ``create_app_from_env`` reads (``edge cloud serve --workers N`` sets it for its workers)
CONFIG_ENV = "EDGE_CLOUD_CONFIG"


class ServiceSettings(BaseSettings):
    """Everything ``edge cloud serve`` can be told. ``EDGE_CLOUD_DATABASE_URL`` overrides
    ``database_url`` and so on; lists take JSON (``EDGE_CLOUD_TRUSTED_KEYS='["a.pub"]'``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    # -- storage ---------------------------------------------------------------------------
    data_dir: Path = Field(default=Path("edge-cloud"), description="home of the embedded defaults")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite in data_dir")
    storage: Literal["local", "s3"] = "local"
    storage_dir: Path | None = Field(default=None, description="bundle directory; default data_dir/bundles")
    s3_bucket: str | None = None
    s3_prefix: str = "bundles/"
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    # Usually left unset so boto3 finds credentials the standard way (env, instance role).
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    cache_dir: Path | None = Field(default=None, description="where bundles are unpacked for inference")

    # -- security --------------------------------------------------------------------------
    admin_token: SecretStr | None = Field(default=None, description="plain admin token (hashed at startup)")
    admin_token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                                           description="sha256 hex of the admin token, instead of admin_token")
    trusted_keys: list[Path] = Field(default_factory=list, description="Ed25519 public keys (PEM) bundles "
                                     "must be signed with; uploads are refused when empty")
    max_upload_bytes: int = Field(default=512 * 1024**2, ge=1024)
    max_unpacked_bytes: int = Field(default=2 * 1024**3, ge=1024, description="bound on what an uploaded "
                                    "archive may unpack to")
    max_image_bytes: int = Field(default=16 * 1024**2, ge=1024)
    max_infer_bytes: int = Field(default=64 * 1024**2, ge=1024)
    #: images (``/classify``, samples) whose header declares more pixels are refused before any
    #: decoding (a 230 KiB PNG can declare 9000x9000 = 243 MB of RGB); a larger JPEG is decoded
    #: reduced (Pillow's ``draft``) when that brings it under the bound
    max_decode_pixels: int = Field(default=24_000_000, ge=64 * 64, le=100_000_000)
    #: images decoded at once per process; the others wait (bounds the decode memory)
    max_concurrent_decodes: int = Field(default=2, ge=1, le=64)

    # -- field samples ---------------------------------------------------------------------
    #: per device: at most this many samples and bytes are kept; when a new one would pass either
    #: bound, the device's oldest samples are dropped (retention) to make room
    samples_max_per_device: int = Field(default=1000, ge=1)
    samples_max_bytes_per_device: int = Field(default=256 * 1024**2, ge=1024)
    #: per device: new samples accepted per minute; more is a 429 (a resend of a stored one is not new)
    samples_max_per_minute: int = Field(default=60, ge=1)

    # -- inference -------------------------------------------------------------------------
    #: gather concurrent requests into one backend call (models with a dynamic batch dimension;
    #: fixed-batch models always run each request as soon as a backend is free)
    batching: bool = True
    max_batch_size: int = Field(default=16, ge=1, le=1024)
    max_batch_wait_ms: float = Field(default=2.0, ge=0, le=1000)
    inference_threads: int | None = Field(default=None, ge=1)
    inference_workers: int = Field(default=1, ge=1, le=64, description="backend instances per model")
    max_loaded_models: int = Field(default=4, ge=1)
    resolve_cache_seconds: float = Field(default=1.0, ge=0, description="how long a replica trusts its "
                                         "view of which version a channel serves")
    default_channel: str = Field(default="stable", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

    # -- MQTT update notices ---------------------------------------------------------------
    mqtt_host: str | None = None
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None

    @field_validator("s3_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return v if not v or v.endswith("/") else v + "/"

    @model_validator(mode="after")
    def _check(self) -> ServiceSettings:
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("storage = 's3' needs s3_bucket")
        if self.admin_token is not None and self.admin_token_sha256 is not None:
            raise ValueError("set admin_token or admin_token_sha256, not both")
        if self.admin_token is not None and len(self.admin_token.get_secret_value()) < 16:
            raise ValueError("admin_token must be at least 16 characters")
        return self

    # -- derived ---------------------------------------------------------------------------
    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'edge-cloud.db').as_posix()}"

    @property
    def resolved_storage_dir(self) -> Path:
        return self.storage_dir or self.data_dir / "bundles"

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.data_dir / "cache"

    @property
    def admin_hash(self) -> str | None:
        if self.admin_token_sha256:
            return self.admin_token_sha256
        if self.admin_token is not None:
            return hashlib.sha256(self.admin_token.get_secret_value().encode()).hexdigest()
        return None

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit arguments first, then EDGE_CLOUD_* variables, then the TOML file (if any).
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)

    @classmethod
    def from_toml(cls, path: str | Path | None, **overrides: Any) -> ServiceSettings:
        """Read ``path`` (a TOML file with the settings at top level), then apply EDGE_CLOUD_* variables."""
        if path is None:
            return cls(**overrides)
        sub = type("_TomlServiceSettings", (cls,), {
            "model_config": SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", toml_file=str(path)),
        })
        settings: ServiceSettings = sub(**overrides)
        return settings


def legacy_env_names(environ: Mapping[str, str]) -> dict[str, str]:
    """Variables set under the service's old ``EDGE_`` names (``EDGE_ADMIN_TOKEN``...), which it no
    longer reads, each with its new name, so ``edge cloud serve`` can say so instead of silently
    running without them."""
    old = {f"EDGE_{name.upper()}": f"{ENV_PREFIX}{name.upper()}" for name in ServiceSettings.model_fields}
    old["EDGE_SERVICE_CONFIG"] = CONFIG_ENV
    return {name: old[name] for name in sorted(old) if name in environ}
