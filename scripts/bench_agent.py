#!/usr/bin/env python3
"""Benchmarks of the device agent, each against the plain thing in the same run.

1. Frame rate: `edge agent` (offline routing, telemetry on: outbox + real Mosquitto, a JSONL output)
   on a directory of real images, against `edge run` on the same bundle, images and threads;
   runs interleaved, medians compared. Peak RSS of each process (wait4). Also the agent in online
   and cascade mode with a cloud that is gone (a black hole that accepts and never answers): the
   breaker must keep the frame rate of offline.
2. Update of a ~4 MB signed bundle on loopback: from the registry's MQTT notice to the first frame
   served by the new version, with its steps (download, verify, health check, switch), and the
   frames lost during the switch; against the plain path (download the same archive and load it).

Prints a table, then one JSON object. Usage:
    python scripts/bench_agent.py [--images 300] [--repeats 3] [--updates 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"

from edge_device.client import CloudClient  # noqa: E402
from edge_runtime import Model, generate_keypair, load_private_key, make_bundle  # noqa: E402
from tests.support.agent import toml_dumps  # noqa: E402
from tests.support.paths import env_with_project  # noqa: E402
from tests.support.servers import Mosquitto  # noqa: E402
from tests.support.service import ADMIN_TOKEN, CloudService  # noqa: E402

MODEL = SHARED / "models" / "mobilenet_v2_1.0_224_quant.tflite"
LABELS = SHARED / "labels" / "imagenet_labels.txt"
EVENT_RE = re.compile(r"^(\S+ \S+) INFO \S+: event (\w+) (.*)$")


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[int, str, float, int]:
    """Run ``cmd``; return exit code, stderr, wall seconds and peak RSS (KiB) of that process alone."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env or env_with_project(), cwd=ROOT)
    err_lines: list[str] = []
    reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr or []), daemon=True)
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(10)
    return proc.returncode, "".join(err_lines), time.perf_counter() - t0, int(usage.ru_maxrss)


def release(out: Path, key: Path, version: int, pad: int = 0) -> Path:
    extra: dict[str, Any] = {"samples/cat.png": SHARED / "images" / "cat.png"}
    if pad:
        extra["extra/pad.bin"] = os.urandom(pad)
    target = out / f"mobilenet_v2-v{version}.tar.gz"
    make_bundle(MODEL, target, name="mobilenet_v2", version=version, labels=LABELS.read_text().splitlines(),
                preprocess={"size": (224, 224)}, samples=["samples/cat.png"], extra_files=extra,
                metrics={"sample_top1": {"samples/cat.png": "Egyptian cat"}}, expires="2099-01-01T00:00:00Z",
                sign_key=load_private_key(key), overwrite=True)
    return target


def image_dir(tmp: Path, n: int) -> Path:
    src = sorted((SHARED / "images").glob("*.png")) + sorted((SHARED / "images" / "leaves").iterdir())
    d = tmp / "images"
    d.mkdir(exist_ok=True)
    for i in range(n):
        p = src[i % len(src)]
        target = d / f"{i:05d}{p.suffix.lower()}"
        if not target.exists():
            os.link(p, target)
    return d


def agent_toml(tmp: Path, name: str, *, bundle: Path, pub: Path, source: str, threads: int,
               **sections: Any) -> Path:
    cfg: dict[str, Any] = {"device_id": name, "state_dir": str(tmp / f"state-{name}"),
                           "outputs": [str(tmp / f"{name}.jsonl")],
                           "model": {"bundle": str(bundle), "trusted_keys": [str(pub)], "threads": threads,
                                     "backend": "litert"},
                           "source": {"spec": source}, "updates": {"enabled": False}}
    cfg.update(sections)
    path = tmp / f"{name}.toml"
    path.write_text(toml_dumps(cfg))
    return path


def pipeline_fps(stderr: str, pattern: str) -> float:
    m = re.search(pattern, stderr)
    if m is None:
        raise RuntimeError(f"no frame rate in the output:\n{stderr[-3000:]}")
    return float(m.group(1))


def outputs_name(variant: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", variant).strip("-")


def breaker_open_fps(path: Path) -> float:
    """Frames per second over the records answered locally because the breaker was open."""
    ts = [datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp()
          for r in (json.loads(x) for x in path.read_text().splitlines() if x) if r.get("route") == "breaker-open"]
    if len(ts) < 10:
        raise RuntimeError(f"{path}: only {len(ts)} frames with the breaker open")
    return (len(ts) - 1) / (ts[-1] - ts[0])


def black_hole() -> tuple[socket.socket, int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1024)
    return s, int(s.getsockname()[1])


def bench_frame_rate(tmp: Path, bundle: Path, pub: Path, n_images: int, repeats: int, threads: int,
                     broker: Mosquitto) -> dict[str, Any]:
    images = image_dir(tmp, n_images)
    hole, hole_port = black_hole()
    telemetry = {"mqtt_url": broker.url, "confirm": "broker", "drain_s": 5.0}
    dead_cloud = {"url": f"http://127.0.0.1:{hole_port}", "token": "unused-token"}
    breaker = {"failures": 3, "backoff_s": 5.0, "backoff_max_s": 60.0}
    variants: dict[str, list[str]] = {
        "edge run": [sys.executable, "-m", "edge_cli", "run", str(bundle), "--source", str(images),
                     "--output", str(tmp / "run.jsonl"), "--threads", str(threads), "--backend", "litert"],
    }
    for name, extra in (("agent offline + telemetry", {}),
                        ("agent online, cloud gone", {"router": {"mode": "online", "deadline_ms": 200.0,
                                                                 "breaker": breaker}, "cloud": dead_cloud}),
                        ("agent cascade, cloud gone", {"router": {"mode": "cascade", "threshold": 0.99,
                                                                  "deadline_ms": 200.0, "breaker": breaker},
                                                       "cloud": dead_cloud})):
        conf = agent_toml(tmp, outputs_name(name), bundle=bundle, pub=pub, source=str(images), threads=threads,
                          telemetry=telemetry, **extra)
        variants[name] = [sys.executable, "-m", "edge_cli", "-v", "agent", "--config", str(conf)]
    rows: dict[str, dict[str, list[float]]] = {k: {"fps": [], "rss_mib": [], "wall_s": [], "open_fps": []}
                                               for k in variants}
    outputs = {name: tmp / f"{outputs_name(name)}.jsonl" for name in variants}
    for _ in range(repeats):
        for name, cmd in variants.items():  # interleaved: drift of the machine hits all alike
            for f in (tmp / "run.jsonl", *outputs.values()):
                f.unlink(missing_ok=True)
            code, err, wall, rss = run_measured(cmd)
            if code != 0:
                raise RuntimeError(f"{name} exited {code}:\n{err[-3000:]}")
            pattern = r"([\d.]+) fps on" if name == "edge run" else r"'fps': ([\d.]+)"
            rows[name]["fps"].append(pipeline_fps(err, pattern))
            rows[name]["rss_mib"].append(rss / 1024)
            rows[name]["wall_s"].append(wall)
            if "cloud gone" in name:
                rows[name]["open_fps"].append(breaker_open_fps(outputs[name]))
    hole.close()
    base = statistics.median(rows["edge run"]["fps"])
    out = {}
    for name, r in rows.items():
        fps = statistics.median(r["fps"])
        out[name] = {"fps": round(fps, 2), "ratio_to_edge_run": round(fps / base, 3),
                     "peak_rss_mib": round(max(r["rss_mib"]), 1), "wall_s": round(statistics.median(r["wall_s"]), 2),
                     "fps_runs": [round(x, 2) for x in r["fps"]]}
        if r["open_fps"]:
            # once the breaker is open the cloud costs nothing: this is the frame rate of a device whose
            # cloud is gone (the whole-run figure also pays the few frames that found out, once)
            of = statistics.median(r["open_fps"])
            out[name].update(breaker_open_fps=round(of, 2), breaker_open_ratio_to_edge_run=round(of / base, 3))
    return {"images": n_images, "threads": threads, "repeats": repeats, "results": out}


def parse_events(lines: list[str]) -> list[tuple[float, str, str]]:
    out = []
    for line in lines:
        m = EVENT_RE.match(line.strip())
        if m:
            t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.append((t, m.group(2), m.group(3)))
    return out


def bench_update(tmp: Path, key: Path, pub: Path, broker: Mosquitto, n_updates: int, threads: int) -> dict[str, Any]:
    data = tmp / "cloud"
    data.mkdir()
    svc = CloudService(data, [pub], mqtt_port=broker.port).start()
    admin = CloudClient(svc.url, ADMIN_TOKEN, timeout=120)
    bundles = [release(tmp, key, v, pad=1_000_000) for v in range(1, n_updates + 2)]
    admin.publish(bundles[0], channel="stable")
    token = admin.register_device("bench-upd", model="mobilenet_v2", channel="stable")["token"]
    images = image_dir(tmp, 15)
    conf = agent_toml(tmp, "bench-upd", bundle=bundles[0], pub=pub, source=str(images), threads=threads,
                      cloud={"url": svc.url, "token": token},
                      updates={"enabled": True, "first_poll_s": 3600.0, "poll_interval_s": 3600.0,
                               "probation_frames": 20},
                      telemetry={"mqtt_url": broker.url, "confirm": "broker"})
    text = conf.read_text().replace(f'spec = "{images}"', f'spec = "{images}"\nrepeat = true')
    conf.write_text(text)
    proc = subprocess.Popen([sys.executable, "-m", "edge_cli", "-v", "agent", "--config", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env_with_project(),
                            cwd=ROOT)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True).start()
    results: list[dict[str, Any]] = []
    out_file = tmp / "bench-upd.jsonl"

    def wait(cond: Any, what: str, timeout: float = 120) -> None:
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end or proc.poll() is not None:
                raise RuntimeError(f"timed out waiting for {what}:\n{''.join(lines[-30:])}")
            time.sleep(0.01)

    try:
        wait(lambda: any("event agent_started" in line for line in lines), "the agent")
        time.sleep(1.0)  # let the commands connection subscribe
        for b in bundles[1:]:
            v = int(re.search(r"-v(\d+)\.tar\.gz", b.name).group(1))  # type: ignore[union-attr]
            t_notice = time.time()
            admin.publish(b, channel="stable")  # the registry sends the MQTT notice
            wait(lambda v=v: any(f"event update_confirmed {{'version': {v}" in line for line in lines), f"v{v}")
            ev = {name: t for t, name, body in parse_events(lines) if f"'version': {v}" in body}
            recs = [json.loads(x) for x in out_file.read_text().splitlines() if x]
            first_new = next(r for r in recs if r["model"]["version"] == v)
            t_first = datetime.fromisoformat(first_new["ts"].replace("Z", "+00:00")).timestamp()
            results.append({
                "version": v, "bytes": b.stat().st_size,
                "notice_to_serving_s": round(t_first - t_notice, 3),
                "notice_to_start_s": round(ev["update_started"] - t_notice, 3),
                "download_s": round(ev["update_downloaded"] - ev["update_started"], 3),
                "verify_s": round(ev["update_verified"] - ev["update_downloaded"], 3),
                "health_check_s": round(ev["update_healthy"] - ev["update_verified"], 3),
                "switch_s": round(ev["update_succeeded"] - ev["update_healthy"], 3),
            })
        proc.terminate()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    recs = [json.loads(x) for x in out_file.read_text().splitlines() if x]
    frames = [r["frame"] for r in recs]
    lost = (max(frames) + 1 - len(frames)) if frames else 0
    errors = sum(1 for r in recs if "error" in r)
    # the plain path: download the same archive and load it, nothing checked
    plain = []
    for b in bundles[1:]:
        v = int(re.search(r"-v(\d+)\.tar\.gz", b.name).group(1))  # type: ignore[union-attr]
        t0 = time.perf_counter()
        dest = admin.download(f"/api/v1/models/mobilenet_v2/versions/{v}/bundle", tmp / f"plain-v{v}.tar.gz")
        m = Model.load(dest, threads=threads, backend="litert")
        plain.append(time.perf_counter() - t0)
        m.close()
    svc.stop()
    return {"updates": results, "frames": len(recs), "frames_lost": lost, "error_records": errors,
            "median_notice_to_serving_s": round(statistics.median(r["notice_to_serving_s"] for r in results), 3),
            "plain_download_and_load_s": round(statistics.median(plain), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as d:
        tmp = Path(d)
        key, pub = generate_keypair(tmp / "keys")
        bundle = release(tmp, key, 1)
        broker = Mosquitto(tmp / "mosquitto").start()
        try:
            fr = bench_frame_rate(tmp, bundle, pub, args.images, args.repeats, args.threads, broker)
            (tmp / "upd").mkdir()
            up = bench_update(tmp / "upd", key, pub, broker, args.updates, args.threads)
        finally:
            broker.stop()
    print(f"\nFrame rate: {fr['images']} images, {fr['threads']} threads, median of {fr['repeats']} interleaved runs")
    print(f"{'':28} {'fps':>8} {'x edge run':>11} {'peak RSS MiB':>13} {'wall s':>8} {'breaker open: fps':>18}")
    for name, r in fr["results"].items():
        tail = f"{r['breaker_open_fps']:9.2f} ({r['breaker_open_ratio_to_edge_run']:.3f}x)" if "breaker_open_fps" in r \
            else ""
        print(f"{name:28} {r['fps']:8.2f} {r['ratio_to_edge_run']:11.3f} {r['peak_rss_mib']:13.1f} {r['wall_s']:8.2f} "
              f"{tail:>18}")
    print(f"\nUpdate of a {up['updates'][0]['bytes'] / 1e6:.1f} MB bundle on loopback (MQTT notice -> first frame "
          "on the new version)")
    print(f"{'version':>8} {'total s':>8} {'to start':>9} {'download':>9} {'verify':>7} {'health':>7} {'switch':>7}")
    for r in up["updates"]:
        print(f"{r['version']:8d} {r['notice_to_serving_s']:8.3f} {r['notice_to_start_s']:9.3f} "
              f"{r['download_s']:9.3f} {r['verify_s']:7.3f} {r['health_check_s']:7.3f} {r['switch_s']:7.3f}")
    print(f"plain download + load of the same archive: {up['plain_download_and_load_s']:.3f} s; "
          f"frames {up['frames']}, lost in the switches {up['frames_lost']}, error records {up['error_records']}")
    print(json.dumps({"frame_rate": fr, "update": up}, indent=None))


if __name__ == "__main__":
    main()
