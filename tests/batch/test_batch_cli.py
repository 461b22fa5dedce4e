"""`edge batch` from the command line: the JSON summary, a signed bundle required with --pubkey
(one `error:` line otherwise), and a run killed with SIGKILL then resumed: every input exactly
once, none missing."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_runtime import load_private_key, sign_bundle
from tests.support.batch import make_images, read_rows
from tests.support.cli import edge_without, run_cli
from tests.support.data import MOBILENET_TOP1
from tests.support.net import free_port, wait_for
from tests.support.paths import env_with_project


def _signed(bundle: Path, keys: Any, dst: Path) -> Path:
    shutil.copytree(bundle, dst)
    sign_bundle(dst, load_private_key(keys.private))
    return dst


def test_json_summary_and_rows(mobilenet_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_images(tmp_path / "in", 4)
    (tmp_path / "in" / "junk.png").write_text("junk")
    db = f"sqlite:///{tmp_path / 'p.db'}"
    code, out, err = run_cli(["batch", str(mobilenet_bundle), "-s", str(tmp_path / "in"), "-o", db, "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["inputs"] == 5 and summary["written"] == 5 and summary["errors"] == 1
    assert summary["model"] == {"name": "mobilenet_v2", "version": 1} and summary["engine"] == "local"
    assert "junk.png: not an image" in summary["error_samples"][0]
    assert len(read_rows(db)) == 5

    code, out, err = run_cli(["batch", str(mobilenet_bundle), "-s", str(tmp_path / "in"), "-o", db], capsys)
    assert code == 0 and out == ""
    assert "5 input(s), 5 already done, 0 run" in err

    # --progress: a tqdm bar on stderr even when stderr is not a terminal
    db2 = f"sqlite:///{tmp_path / 'p2.db'}"
    code, out, err = run_cli(["batch", str(mobilenet_bundle), "-s", str(tmp_path / "in"), "-o", db2, "--progress"],
                             capsys)
    assert code == 0 and "edge batch: 100%" in err and "5/5" in err, err


def test_pubkey_accepts_signed_refuses_unsigned_and_tampered(mobilenet_bundle: Path, keys: Any, other_keys: Any,
                                                            tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    make_images(tmp_path / "in", 2)
    db = f"sqlite:///{tmp_path / 'p.db'}"
    signed = _signed(mobilenet_bundle, keys, tmp_path / "signed")
    base = ["-s", str(tmp_path / "in"), "-o", db, "--pubkey", str(keys.public)]

    code, _, err = run_cli(["batch", str(signed), *base, "--json"], capsys)
    assert code == 0, err

    tampered = _signed(mobilenet_bundle, keys, tmp_path / "tampered")
    labels = tampered / "labels.txt"
    labels.write_text(labels.read_text().replace("Egyptian cat", "Egyptian dog"))
    wrong_key = _signed(mobilenet_bundle, other_keys, tmp_path / "other")
    for bundle, what in ((mobilenet_bundle, "not signed"), (tampered, "labels.txt"), (wrong_key, "signature")):
        code, out, err = run_cli(["batch", str(bundle), *base], capsys)
        lines = err.strip().splitlines()
        assert code == 1 and out == "", err
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert what in lines[0]
    # nothing was written by the refused runs
    assert len(read_rows(db)) == 2


def _count(db: Path) -> int:
    import sqlite3

    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM batch_predictions").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not there yet
        return 0


def _parts_rows(out: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(f).num_rows for f in out.glob("part-*.parquet"))


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running Ray cluster of one head node on loopback (2 CPUs, 100 MB object store), as
    `ray start --head` makes it; its address. Stopped by killing its own process group."""
    log = tmp_path_factory.mktemp("ray-head") / "head.log"
    port = free_port()
    env = {**env_with_project(), "RAY_AUTH_MODE": "disabled"}
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--port", str(port),
             "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--object-store-memory", str(100 * 1024 * 1024),
             "--include-dashboard", "false", "--disable-usage-stats"],
            env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: b"Ray runtime started" in log.read_bytes() or proc.poll() is not None, 180,
                 "ray start --head")
        assert proc.poll() is None, log.read_text()
        yield f"127.0.0.1:{port}"
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # what the head started, if it outlived it
        # `ray start` names its cluster in /tmp/ray/ray_current_cluster for a later bare ray.init();
        # `ray stop` would remove it (and stop every cluster on the machine): remove only ours.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        with contextlib.suppress(OSError):
            if current.read_text().strip().endswith(f":{port}"):
                current.unlink()


def test_ray_cluster_address_with_a_signed_bundle(ray_cluster: str, mobilenet_bundle: Path, keys: Any,
                                                  tmp_path: Path) -> None:
    """--address: the job runs on a cluster this process did not start; the bundle travels to the
    actors as bytes and each one verifies it with the same key."""
    make_images(tmp_path / "in", 8)
    signed = _signed(mobilenet_bundle, keys, tmp_path / "signed")
    out = tmp_path / "preds.parquet"
    cmd = [sys.executable, "-m", "edge_cli", "batch", str(signed), "-s", str(tmp_path / "in"), "-o", str(out),
           "--engine", "ray", "--address", ray_cluster, "--workers", "2", "--batch-size", "2",
           "--pubkey", str(keys.public), "--json"]
    done = subprocess.run(cmd, env={**env_with_project(), "RAY_AUTH_MODE": "disabled"}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["engine"], summary["workers"], summary["written"], summary["errors"]) == ("ray", 2, 8, 0)
    rows = read_rows(str(out))
    assert len(rows) == 8 and all(r["top_label"] == MOBILENET_TOP1[r["source_key"].rsplit("/", 1)[-1]
                                                                   .rsplit("-", 1)[0] + ".png"] for r in rows)


@pytest.mark.parametrize("kind", ["sqlite", "parquet", "ray-cluster"])
def test_kill_and_resume(kind: str, mobilenet_bundle: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """SIGKILL once some rows are in, run again: every input exactly once. With ``ray-cluster``
    the driver of a job on a running cluster is killed (the cluster drops the job's actors)."""
    n = 200
    make_images(tmp_path / "in", n, link=True)
    db = tmp_path / "p.db"
    parts = tmp_path / "parts"
    output = str(parts) + "/" if kind == "parquet" else f"sqlite:///{db}"
    rows_in = (lambda: _parts_rows(parts) if parts.exists() else 0) if kind == "parquet" else (lambda: _count(db))
    cmd = [sys.executable, "-m", "edge_cli", "batch", str(mobilenet_bundle), "-s", str(tmp_path / "in"),
           "-o", output, "--batch-size", "4", "--threads-per-worker", "1", "--json"]
    env = env_with_project()
    if kind == "ray-cluster":
        cmd += ["--engine", "ray", "--workers", "2", "--address", request.getfixturevalue("ray_cluster")]
        env["RAY_AUTH_MODE"] = "disabled"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while rows_in() == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = rows_in()
    assert 0 < before < n

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["already_done"] == before
    assert summary["written"] == n - before
    rows = read_rows(output)
    keys = [r["source_key"] for r in rows]
    assert len(keys) == n and len(set(keys)) == n
    assert set(keys) == {str(p) for p in (tmp_path / "in").iterdir()}
    assert all(r["error"] is None for r in rows)


def test_local_engine_needs_no_ray_and_ray_engine_says_what_to_install(mobilenet_bundle: Path,
                                                                      tmp_path: Path) -> None:
    make_images(tmp_path / "in", 2)
    db = f"sqlite:///{tmp_path / 'p.db'}"
    base = ["batch", str(mobilenet_bundle), "-s", str(tmp_path / "in"), "-o", db]
    local = edge_without("ray", *base, "--json")
    assert local.returncode == 0, local.stderr
    assert json.loads(local.stdout)["written"] == 2

    ray = edge_without("ray", *base, "--engine", "ray")
    lines = ray.stderr.strip().splitlines()
    assert ray.returncode == 1 and len(lines) == 1, ray.stderr
    assert lines[0] == "error: edge batch --engine ray needs ray[data]: pip install 'edge-runtime[batch]'"
