from tests.telemetry.fixtures import broker, make_device, make_ingester, postgres  # noqa: F401
