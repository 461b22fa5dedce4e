"""Errors of ``edge_device.agent``.

They sit under :class:`~edge_runtime.EdgeError`, so the ``edge`` CLI prints them as one line::

    EdgeError
    └── AgentError                  the agent cannot start or do what it was asked
        ├── AgentConfigError        agent.toml (or an EDGE_* override) is invalid: names the key
        ├── StateError              the state directory cannot be read, written or locked
        │   └── AgentRunningError   another agent holds this state directory
        └── UpdateError             an update could not be completed (download, disk): retried later
            └── UpdateRefused       a bundle was refused: ``reason`` says which rule it broke

Errors of the cloud client (``edge_device.client``) are wrapped at the boundary with ``from``.
"""

from __future__ import annotations

from edge_runtime import EdgeError

__all__ = [
    "REFUSAL_REASONS",
    "AgentConfigError",
    "AgentError",
    "AgentRunningError",
    "StateError",
    "UpdateError",
    "UpdateRefused",
]

#: Why a bundle can be refused; events and ``state.json`` use these words.
REFUSAL_REASONS = (
    "signature",  # unsigned, or not signed by a pinned key
    "integrity",  # a file's hash or size differs from the manifest, or the archive is unsafe
    "downgrade",  # version not strictly greater than the highest ever accepted
    "bad-version",  # this version was rolled back or failed its health check before
    "expired",  # the manifest's expiry has passed (or it has none and one is required)
    "wrong-model",  # another model's bundle, or another version than the registry announced
    "too-large",  # bigger than updates.max_bundle_bytes
    "health",  # loading or running it on its own samples failed or gave insane outputs
)


class AgentError(EdgeError):
    """Base of every error raised on purpose by edge_device.agent."""


class AgentConfigError(AgentError):
    """agent.toml or an EDGE_* override is invalid; the message names each key and what is wrong."""


class StateError(AgentError):
    """The state directory (pointers, state.json, models) cannot be read, written or locked."""


class AgentRunningError(StateError):
    """Another agent process holds the state directory's lock."""


class UpdateError(AgentError):
    """An update could not be completed for a reason that may pass (network, disk); it is retried."""


class UpdateRefused(UpdateError):
    """A bundle broke one of the update rules; ``reason`` is one of :data:`REFUSAL_REASONS`."""

    def __init__(self, reason: str, message: str, *, version: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.version = version
