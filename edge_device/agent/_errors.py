"""Errors of ``edge_device.agent``.

They sit under :class:`~edge_runtime.EdgeError`, so the ``edge`` CLI prints them as one line::

    EdgeError
    └── AgentError                  the agent cannot start or do what it was asked
        ├── AgentConfigError        agent.toml (or an EDGE_* override) is invalid: names the key
        ├── StateError              the state directory cannot be read, written or locked
        │   └── AgentRunningError   another agent holds this state directory
        └── UpdateError             an update could not be completed (download, disk): retried later
            └── UpdateRefused       a bundle was refused: ``reason`` says which rule it broke, and
                                    ``policy`` whether it is this device's policy (never marks the
                                    version bad) or a verdict on the bundle

Errors of the cloud client (``edge_device.client``) are wrapped at the boundary with ``from``.
"""

from __future__ import annotations

from edge_runtime import EdgeError

__all__ = [
    "POLICY_REASONS",
    "REFUSAL_REASONS",
    "VERDICT_REASONS",
    "AgentConfigError",
    "AgentError",
    "AgentRunningError",
    "StateError",
    "UpdateError",
    "UpdateRefused",
]

#: Refusals that are a verdict on the bundle: its content is wrong, whatever this device's config
#: says. A failed health check marks the version bad in ``state.json`` (its signed content never
#: changes, so it is never tried again); a bad signature or hash is remembered for that download's
#: content only (the version number of an unauthenticated bundle proves nothing, so an attacker
#: cannot blacklist a version by sending a broken copy of it).
VERDICT_REASONS = (
    "signature",  # unsigned, or not signed by a pinned key
    "integrity",  # a file's hash or size differs from the manifest, or the archive is unsafe
    "downgrade",  # version not strictly greater than the highest ever accepted
    "bad-version",  # this version was rolled back or failed its health check before
    "health",  # loading or running it on its own samples failed or gave insane outputs
)
#: Refusals by this device's update policy ([updates] and [model] of agent.toml): not a verdict on
#: the version, never recorded as bad. The same version installs once the policy allows it (a
#: config change) or when a corrected bundle of that version is offered.
POLICY_REASONS = (
    "expired",  # the manifest's expiry has passed (or it has none and updates.require_expiry is on)
    "no-samples",  # no sample inputs for the health check and updates.require_samples is on
    "min-runtime",  # the bundle needs a newer runtime than this device has (manifest.min_runtime)
    "wrong-model",  # another model's bundle, or another version than the registry announced
    "too-large",  # bigger than updates.max_bundle_bytes
)
#: Why a bundle can be refused; events and ``state.json`` use these words.
REFUSAL_REASONS = VERDICT_REASONS + POLICY_REASONS


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
        if reason not in REFUSAL_REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}; one of {', '.join(REFUSAL_REASONS)}")
        super().__init__(message)
        self.reason = reason
        self.version = version

    @property
    def policy(self) -> bool:
        """True when this device's update policy refused the bundle (:data:`POLICY_REASONS`): not a
        verdict on the version, which is never marked bad for it."""
        return self.reason in POLICY_REASONS
