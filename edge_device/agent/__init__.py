"""The device agent: what runs on the device for months under systemd (``edge agent``).

It wires the runtime's pipeline to a hybrid router (offline, online or cascade, with a circuit
breaker and per-frame deadlines), the telemetry outbox, signed model updates (TUF's client rules:
pinned keys, hashes, no rollback, no freeze, health check, atomic switch, automatic rollback), the
systemd notify protocol with a watchdog, an optional local HTTP endpoint and Home Assistant
discovery.

    >>> from edge_device.agent import Agent, load_config      # doctest: +SKIP
    >>> Agent(load_config("/etc/edge/agent.toml")).run()         # doctest: +SKIP

Importing this package imports neither paho-mqtt nor the cloud client; starting the agent does,
when the config asks for them.
"""

from ._agent import Agent, RepeatSource
from ._commands import CommandClient, UpdateNotice, discovery_messages, discovery_topic_filter, ha_node_id
from ._config import (
    EXAMPLE_TOML,
    AgentConfig,
    BreakerConfig,
    CloudConfig,
    HomeAssistantConfig,
    HttpConfig,
    ModelConfig,
    RouterConfig,
    SourceConfig,
    TelemetrySection,
    UpdatesConfig,
    load_config,
)
from ._errors import (
    POLICY_REASONS,
    REFUSAL_REASONS,
    VERDICT_REASONS,
    AgentConfigError,
    AgentError,
    AgentRunningError,
    StateError,
    UpdateError,
    UpdateRefused,
)
from ._http import LocalHTTP
from ._router import CircuitBreaker, CloudClassifier, Router
from ._sdnotify import SdNotifier, Watchdog
from ._startup import Fallback, Startup, ensure_adopted, load_keys, model_options, resolve_startup, verify_startup
from ._state import AgentState, Pointer, StateStore, rollback_pointers
from ._updater import Probation, Updater, UpdateResult
from ._verify import ModelOptions, check_rules, health_check, verify_bundle

__all__ = [
    "EXAMPLE_TOML",
    "POLICY_REASONS",
    "REFUSAL_REASONS",
    "VERDICT_REASONS",
    "Agent",
    "AgentConfig",
    "AgentConfigError",
    "AgentError",
    "AgentRunningError",
    "AgentState",
    "BreakerConfig",
    "CircuitBreaker",
    "CloudClassifier",
    "CloudConfig",
    "CommandClient",
    "Fallback",
    "HomeAssistantConfig",
    "HttpConfig",
    "LocalHTTP",
    "ModelConfig",
    "ModelOptions",
    "Pointer",
    "Probation",
    "RepeatSource",
    "Router",
    "RouterConfig",
    "SdNotifier",
    "SourceConfig",
    "Startup",
    "StateError",
    "StateStore",
    "TelemetrySection",
    "UpdateError",
    "UpdateNotice",
    "UpdateRefused",
    "UpdateResult",
    "Updater",
    "UpdatesConfig",
    "Watchdog",
    "check_rules",
    "discovery_messages",
    "discovery_topic_filter",
    "ensure_adopted",
    "ha_node_id",
    "health_check",
    "load_config",
    "load_keys",
    "model_options",
    "resolve_startup",
    "rollback_pointers",
    "verify_bundle",
    "verify_startup",
]
