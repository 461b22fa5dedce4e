"""The service's view of the database: the registry and fleet tables under short names.

``cloud_sync.db`` holds every table (one ``metadata``) and the migrations; ``make_engine`` migrates
the schema to the newest revision before the service uses it. Everything a replica knows lives
in the database or the object store, so any number of replicas can serve behind a load balancer.
"""

from __future__ import annotations

from ..db import fleet_devices as devices
from ..db import fleet_samples as samples
from ..db import make_engine, utcnow
from ..db import registry_channel_events as channel_events
from ..db import registry_models as models
from ..db import registry_versions as versions

__all__ = ["channel_events", "devices", "make_engine", "models", "samples", "utcnow", "versions"]
