"""Alembic migrations on SQLite and PostgreSQL: a database made by the last release without
migrations (``metadata.create_all`` of the tables frozen below) is upgraded with its data, the
service starts on it, ``upgrade`` twice is a no-op, replicas starting together do not race, the
revisions reproduce today's tables exactly, and ``edge cloud db`` reports and migrates."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    insert,
    inspect,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB

from cloud_sync.db import current_revision, head_revision, make_engine, metadata, upgrade
from cloud_sync.service import ServiceSettings
from tests.support.paths import env_with_project
from tests.support.service import ADMIN_TOKEN, run_service

ROOT = Path(__file__).resolve().parents[2]
DEVICE_TOKEN = "edt_a-device-token-from-the-previous-release"


# -- the previous release's tables, frozen (cloud_sync/db/_tables.py, cloud_sync/service/_db.py and
# -- cloud_sync/service/_samples.py as they were before migrations; each made by create_all) ----------
def _previous_release(shared: MetaData | None = None) -> tuple[MetaData, MetaData, MetaData]:
    """(telemetry, registry and fleet, samples): three MetaData, as that release had them (or all
    three in ``shared``, to compare the whole schema)."""
    tel, reg, smp = (shared, shared, shared) if shared is not None else (MetaData(), MetaData(), MetaData())
    ident = BigInteger().with_variant(Integer(), "sqlite")
    js = JSON().with_variant(JSONB(), "postgresql")

    def key() -> list[Column[object]]:
        return [Column("device_id", String(64), nullable=False), Column("seq", BigInteger, nullable=False),
                Column("idx", Integer, nullable=False)]

    Table("telemetry_devices", tel, Column("device_id", String(64), primary_key=True),
          Column("first_seen", DateTime(timezone=True), nullable=False),
          Column("last_seen", DateTime(timezone=True), nullable=False), Column("last_seq", BigInteger),
          Column("status", String(16)), Column("status_at", DateTime(timezone=True)), Column("runtime", Text))
    Table("telemetry_messages", tel, Column("id", ident, primary_key=True, autoincrement=True),
          Column("device_id", String(64), nullable=False), Column("seq", BigInteger, nullable=False),
          Column("uuid", String(36), nullable=False), Column("kind", String(16), nullable=False),
          Column("created", DateTime(timezone=True)), Column("received_at", DateTime(timezone=True), nullable=False),
          Column("n_records", Integer, nullable=False),
          UniqueConstraint("device_id", "seq", name="uq_telemetry_messages_device_seq"))
    Table("telemetry_records", tel, Column("id", ident, primary_key=True, autoincrement=True), *key(),
          Column("ts", DateTime(timezone=True)), Column("source", Text), Column("frame", BigInteger),
          Column("model_name", Text), Column("model_version", BigInteger), Column("backend", Text),
          Column("path", Text), Column("top_label", Text), Column("top_score", Float), Column("latency_ms", Float),
          Column("error", Text), Column("record", js, nullable=False),
          UniqueConstraint("device_id", "seq", "idx", name="uq_telemetry_records_key"),
          Index("ix_telemetry_records_device_ts", "device_id", "ts"))
    Table("telemetry_metrics", tel, Column("id", ident, primary_key=True, autoincrement=True), *key(),
          Column("ts", DateTime(timezone=True)), Column("fps", Float), Column("frames", BigInteger),
          Column("latency_p50_ms", Float), Column("latency_p99_ms", Float), Column("cpu_temp_c", Float),
          Column("memory_rss_mib", Float), Column("outbox_rows", BigInteger), Column("outbox_bytes", BigInteger),
          Column("dropped_total", BigInteger), Column("record", js, nullable=False),
          UniqueConstraint("device_id", "seq", "idx", name="uq_telemetry_metrics_key"),
          Index("ix_telemetry_metrics_device_ts", "device_id", "ts"))
    Table("telemetry_events", tel, Column("id", ident, primary_key=True, autoincrement=True), *key(),
          Column("ts", DateTime(timezone=True)), Column("event", Text), Column("record", js, nullable=False),
          UniqueConstraint("device_id", "seq", "idx", name="uq_telemetry_events_key"),
          Index("ix_telemetry_events_device_ts", "device_id", "ts"))
    Table("telemetry_rejects", tel, Column("id", ident, primary_key=True, autoincrement=True),
          Column("received_at", DateTime(timezone=True), nullable=False), Column("topic", Text, nullable=False),
          Column("device_id", Text), Column("seq", BigInteger), Column("reason", Text, nullable=False),
          Column("size", BigInteger, nullable=False), Column("payload", LargeBinary, nullable=False),
          Column("truncated", Integer, nullable=False, default=0))

    Table("registry_models", reg, Column("name", String(128), primary_key=True),
          Column("created_at", DateTime(timezone=True), nullable=False))
    Table("registry_versions", reg, Column("id", Integer, primary_key=True, autoincrement=True),
          Column("model_name", String(128), ForeignKey("registry_models.name"), nullable=False),
          Column("version", Integer, nullable=False), Column("sha256", String(64), nullable=False),
          Column("size", BigInteger, nullable=False), Column("storage_key", String(512), nullable=False),
          Column("manifest", JSON, nullable=False), Column("signed_by", String(64), nullable=True),
          Column("created_at", DateTime(timezone=True), nullable=False),
          UniqueConstraint("model_name", "version", name="uq_registry_versions_model_version"))
    Table("registry_channel_events", reg, Column("id", Integer, primary_key=True, autoincrement=True),
          Column("model_name", String(128), ForeignKey("registry_models.name"), nullable=False),
          Column("channel", String(64), nullable=False), Column("version", Integer, nullable=False),
          Column("undone", Boolean, nullable=False, default=False),
          Column("created_at", DateTime(timezone=True), nullable=False),
          Column("undone_at", DateTime(timezone=True), nullable=True),
          Index("ix_registry_channel_events_lookup", "model_name", "channel", "undone", "id"))
    Table("fleet_devices", reg, Column("id", String(64), primary_key=True), Column("name", String(128), nullable=False),
          Column("model", String(128), nullable=True), Column("channel", String(64), nullable=False),
          Column("token_sha256", String(64), nullable=False, unique=True),
          Column("created_at", DateTime(timezone=True), nullable=False),
          Column("revoked_at", DateTime(timezone=True), nullable=True),
          Column("last_seen", DateTime(timezone=True), nullable=True), Column("model_version", Integer, nullable=True),
          Column("outbox_depth", Integer, nullable=True), Column("latency_ms", Float, nullable=True),
          Column("fps", Float, nullable=True))

    Table("fleet_samples", smp, Column("id", Integer, primary_key=True, autoincrement=True),
          Column("device_id", String(64), nullable=False), Column("sha256", String(64), nullable=False),
          Column("size", BigInteger, nullable=False), Column("content_type", String(32), nullable=False),
          Column("width", Integer, nullable=False), Column("height", Integer, nullable=False),
          Column("storage_key", String(512), nullable=False), Column("meta", JSON, nullable=False),
          Column("received_at", DateTime(timezone=True), nullable=False),
          UniqueConstraint("device_id", "sha256", name="uq_fleet_samples_device_sha256"))
    return tel, reg, smp


# -- helpers -----------------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'edge-cloud.db'}"
    new_database: Callable[[], str] = request.getfixturevalue("postgres")
    return new_database()


def _plain_engine(url: str) -> Engine:
    """An engine that leaves the schema alone, as the previous release's code found it."""
    return make_engine(url, create_tables=False)


NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _fill_previous_release(engine: Engine) -> None:
    """What a running fleet leaves behind: a model version on a channel, a device, telemetry."""
    tel, reg, smp = _previous_release()
    for md in (tel, reg, smp):
        md.create_all(engine)
    t = {**tel.tables, **reg.tables, **smp.tables}
    manifest = {"name": "mobilenet_v2", "version": 3, "format": "tflite", "task": "classification"}
    with engine.begin() as conn:
        conn.execute(insert(t["registry_models"]).values(name="mobilenet_v2", created_at=NOW))
        conn.execute(insert(t["registry_versions"]).values(
            model_name="mobilenet_v2", version=3, sha256="ab" * 32, size=1234,
            storage_key="mobilenet_v2/3.tar.gz", manifest=manifest, signed_by="cd" * 8, created_at=NOW))
        conn.execute(insert(t["registry_channel_events"]).values(
            model_name="mobilenet_v2", channel="stable", version=3, undone=False, created_at=NOW))
        conn.execute(insert(t["fleet_devices"]).values(
            id="pi-7", name="greenhouse", model="mobilenet_v2", channel="stable",
            token_sha256=hashlib.sha256(DEVICE_TOKEN.encode()).hexdigest(), created_at=NOW,
            last_seen=NOW, model_version=3, outbox_depth=2, latency_ms=41.5, fps=7.0))
        conn.execute(insert(t["telemetry_devices"]).values(
            device_id="pi-7", first_seen=NOW, last_seen=NOW, last_seq=2, status="online", status_at=NOW))
        conn.execute(insert(t["telemetry_messages"]).values(
            device_id="pi-7", seq=2, uuid="0" * 36, kind="telemetry", created=NOW, received_at=NOW, n_records=2))
        for idx, label in enumerate(["daisy", "leaf_blight"]):
            conn.execute(insert(t["telemetry_records"]).values(
                device_id="pi-7", seq=2, idx=idx, ts=NOW, source="cam0", frame=idx, model_name="mobilenet_v2",
                model_version=3, backend="litert", path="local", top_label=label, top_score=0.9,
                latency_ms=40.0 + idx, record={"frame": idx, "top_k": [{"label": label, "score": 0.9}]}))
        conn.execute(insert(t["telemetry_rejects"]).values(
            received_at=NOW, topic="edge/pi-7/telemetry", device_id="pi-7", seq=9, reason="malformed",
            size=3, payload=b"{x}", truncated=0))


def _counts(engine: Engine) -> dict[str, int]:
    """Rows in each of the previous release's tables."""
    shared = MetaData()
    _previous_release(shared)
    with engine.connect() as conn:
        return {name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                for name, table in shared.tables.items()}


def _schema_diff(engine: Engine, target: MetaData = metadata) -> list[object]:
    """What autogenerate would change to make the database match ``target`` (today's tables by
    default); [] = identical."""
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), target))


# -- tests -------------------------------------------------------------------------------------------
def test_a_previous_release_database_is_upgraded_with_its_data_and_the_service_starts(
        db_url: str, tmp_path: Path) -> None:
    engine = _plain_engine(db_url)
    _fill_previous_release(engine)
    before = _counts(engine)
    assert current_revision(engine) is None

    head = head_revision()
    assert upgrade(engine) == (None, head)
    assert current_revision(engine) == head
    assert _counts(engine) == before
    assert _schema_diff(engine) == []
    with engine.connect() as conn:
        recs = conn.execute(select(metadata.tables["telemetry_records"]).order_by("idx")).all()
        reject = conn.execute(select(metadata.tables["telemetry_rejects"])).one()
    assert [(r.top_label, r.record["top_k"][0]["label"]) for r in recs] == [("daisy", "daisy"),
                                                                              ("leaf_blight", "leaf_blight")]
    assert bytes(reject.payload) == b"{x}"

    # Again: nothing to do, nothing touched.
    assert upgrade(engine) == (head, head)
    assert _counts(engine) == before
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar_one() == 1
    engine.dispose()

    settings = ServiceSettings(data_dir=tmp_path / "svc", database_url=db_url, admin_token=ADMIN_TOKEN)
    with run_service(settings) as svc:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        models = httpx.get(svc.url + "/api/v1/models", headers=admin, timeout=30).json()
        assert models == [{"name": "mobilenet_v2", "latest": 3, "versions": 1, "channels": {"stable": 3}}]
        # The fleet merges the registration with telemetry: status from telemetry_devices, latency
        # from the newest telemetry record (41.0, not the heartbeat's 41.5).
        fleet = httpx.get(svc.url + "/api/v1/devices", headers=admin, timeout=30).json()
        assert [(d["id"], d["status"], d["model_version"], d["latency_ms"]) for d in fleet] == [
            ("pi-7", "online", 3, 41.0)]
        # The device's token, issued by the previous release, still authenticates it.
        me = httpx.get(svc.url + "/api/v1/device", headers={"Authorization": f"Bearer {DEVICE_TOKEN}"}, timeout=30)
        assert me.status_code == 200 and me.json()["id"] == "pi-7"
        update = httpx.get(svc.url + "/api/v1/device/update", params={"current_version": 2},
                           headers={"Authorization": f"Bearer {DEVICE_TOKEN}"}, timeout=30).json()
        assert (update["version"], update["update_available"]) == (3, True)


def test_an_ingester_only_database_gets_the_service_tables(db_url: str) -> None:
    # The previous ingester made only the telemetry tables; the service made the rest on first use.
    engine = _plain_engine(db_url)
    tel, _, _ = _previous_release()
    tel.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(tel.tables["telemetry_devices"]).values(device_id="pi-1", first_seen=NOW, last_seen=NOW))
    assert set(inspect(engine).get_table_names()) == set(tel.tables)

    upgrade(engine)
    assert set(inspect(engine).get_table_names()) == set(metadata.tables) | {"alembic_version"}
    assert _counts(engine)["telemetry_devices"] == 1
    assert _schema_diff(engine) == []
    engine.dispose()


def test_migrations_reproduce_the_tables_exactly(db_url: str) -> None:
    # On an empty database the revisions alone must build what the Table declarations say; a table
    # changed without a new revision fails here.
    engine = make_engine(db_url)  # what the service and the ingester do at start-up
    assert current_revision(engine) == head_revision()
    assert _schema_diff(engine) == []
    engine.dispose()


def test_the_first_revision_is_the_previous_release_schema(db_url: str) -> None:
    # 0001 adopts databases made by create_all, so it must build exactly what that release made.
    engine = _plain_engine(db_url)
    assert upgrade(engine, "0001") == (None, "0001")
    previous = MetaData()
    _previous_release(previous)
    assert _schema_diff(engine, previous) == []
    engine.dispose()


def test_replicas_starting_together_migrate_once(db_url: str) -> None:
    # Each "replica" has its own engine (own connections), as separate processes would.
    engines = [_plain_engine(db_url) for _ in range(4)]
    results: list[tuple[str | None, str | None]] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(len(engines))

    def start(engine: Engine) -> None:
        gate.wait()
        try:
            results.append(upgrade(engine))
        except BaseException as exc:  # noqa: BLE001 - reported below with the others
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    head = head_revision()
    assert sorted(results, key=str) == sorted([(None, head)] + [(head, head)] * 3, key=str)
    assert _schema_diff(engines[0]) == []
    for e in engines:
        e.dispose()


def test_edge_cloud_db_current_and_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    _fill_previous_release(_plain_engine(url))
    env = env_with_project()

    def edge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edge_cli", "cloud", "db", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    head = head_revision()
    r = edge("current", "--db", url)
    assert r.returncode == 0, r.stderr
    assert f"revision none (newest: {head}" in r.stdout
    r = edge("upgrade", "--db", url)
    assert r.returncode == 0 and f"migrated from no revision to {head}" in r.stdout, r.stderr
    r = edge("upgrade", "--db", url)
    assert r.returncode == 0 and f"already at revision {head}" in r.stdout, r.stderr
    r = edge("current", "--db", url)
    assert f"revision {head} (newest: {head}; up to date)" in r.stdout
    # Without --db: the service's own setting, from the cloud side's variable.
    env["EDGE_CLOUD_DATABASE_URL"] = url
    r = edge("current")
    assert f"cli.db: revision {head}" in r.stdout, r.stderr
    r = edge("upgrade", "--db", "postgresql://nobody@127.0.0.1:1/none")
    assert r.returncode == 1 and "cannot migrate" in r.stderr and "Traceback" not in r.stderr
