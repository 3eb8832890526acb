#!/usr/bin/env python3
"""Peer benchmark: pol serve against the Cerbos policy decision point, over gRPC, same load.

Run from the repo root:

    python bench/peers/cerbos.py              # 5 s per scenario
    python bench/peers/cerbos.py --quick      # smoke run: 1 s per scenario
    python bench/peers/cerbos.py --cases smuggling,1000 --modes batch

Cerbos: the `cerbos` binary of the npm package `@cerbos/cerbos-linux-x64`, installed at run
time with `npm install --prefix bench/.cerbos` (git-ignored; `--cerbos-dir` to change it,
`--cerbos-bin` to use a binary you already have). It runs with a generated config: disk
storage on a temporary policy directory, gRPC on 127.0.0.1:<free port>, HTTP on another
free loopback port, audit and telemetry off, `maxResourcesPerRequest` raised to the batch
size. It is called over its gRPC API (`cerbos.svc.v1.CerbosService/CheckResources`) with
the protobuf classes of the `cerbos` PyPI package (`pip install cerbos`) through the same
grpc.aio load generator as bench/grpc_load.py (same client processes, channels,
concurrency), so both servers see the same client.

Cases:
  smuggling  the shipped policy (policies/human_smuggling.pol: 5 rules and 1 shadow rule)
             against bench/peers/cerbos/smuggling.yaml (resource kind "content"; each
             pol rule is a Cerbos rule whose action is its verdict; CEL conditions);
             corpus bench.corpus.smuggling_corpus(1000, seed=0).
  4, 1000    the generated policies of bench/corpus.py (rule i: topic == "t{i}" and
             confidence >= 0.5), and for Cerbos a resource policy generated the same way
             (kind "generated_N", one rule per pol rule); corpus generated_corpus(N, 1000).
Actions asked of Cerbos: remove, intervene, allow (and shadow_remove for smuggling); the
verdict is the most severe allowed action, else allow. Before timing, Cerbos's verdict is
checked against pol's engine on every corpus item.

Modes: unary (one item per CheckResources / Evaluate) and batch (`--batch` = 100 resources
per CheckResources / items per EvaluateBatch).

Checks (from the issue): pol decides more items per second than Cerbos in batch mode
(every case); pol holds its unary rate at 1,000 rules (>= 90% of its 4-rule rate; Cerbos's
own ratio is printed beside it). pol serve runs with the most workers it supports here
(2 if `--workers 2` is accepted, else 1); Cerbos (Go) uses every core. Results: a table on
stdout and bench/results/cerbos.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent            # bench/peers
BENCH = HERE.parent
ROOT = BENCH.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() not in (HERE, BENCH)]
sys.path.insert(0, str(ROOT))

from bench import corpus as corpus_mod
from bench import grpc_load as gl

NPM_PACKAGE = "@cerbos/cerbos-linux-x64"
POLICY_DIR = HERE / "cerbos"
CHECK_RESOURCES = "/cerbos.svc.v1.CerbosService/CheckResources"
SMUGGLING_ACTIONS = ("remove", "intervene", "allow", "shadow_remove")
GEN_ACTIONS = ("remove", "intervene", "allow")
HOLD_RATIO = 0.90


# ============================================================================================
# Cerbos: binary, config, policies
# ============================================================================================

def install_cerbos(prefix: Path) -> Path:
    """The cerbos binary from the npm package (installed under `prefix` if not there yet)."""
    pkg = prefix / "node_modules" / "@cerbos" / "cerbos-linux-x64"
    found = _find_binary(pkg)
    if found:
        return found
    npm = shutil.which("npm")
    if not npm:
        raise RuntimeError("npm not found on PATH: cannot install " + NPM_PACKAGE)
    prefix.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), NPM_PACKAGE],
                       capture_output=True, text=True, timeout=600, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"npm install --prefix {prefix} {NPM_PACKAGE} failed ({p.returncode}): {(p.stderr or p.stdout)[-2000:]}")
    found = _find_binary(pkg)
    if not found:
        raise RuntimeError(f"{NPM_PACKAGE} installed but no cerbos binary under {pkg}")
    return found


def _find_binary(pkg: Path) -> Path | None:
    for name in ("cerbos", "cerbos-linux-x64", "bin/cerbos"):
        p = pkg / name
        if p.is_file():
            if not os.access(p, os.X_OK):
                p.chmod(0o755)
            return p
    return None


def cerbos_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    return out.splitlines()[0].strip() if out else "?"


def gen_cerbos_policy(n: int) -> str:
    """A Cerbos resource policy equivalent to bench.corpus.gen_source(n)."""
    lines = ["apiVersion: api.cerbos.dev/v1", "resourcePolicy:", "  version: default", f"  resource: generated_{n}", "  rules:"]
    for i in range(n):
        lines += [
            f"    - name: {corpus_mod.gen_rule_name(i)}",
            f'      actions: ["{corpus_mod.gen_verdict(i)}"]',
            "      effect: EFFECT_ALLOW",
            '      roles: ["*"]',
            "      condition:",
            "        match:",
            f'          expr: R.attr.topic == "t{i}" && R.attr.confidence >= {corpus_mod.GEN_THRESHOLD}',
        ]
    return "\n".join(lines) + "\n"


def write_cerbos_config(workdir: Path, policy_dir: Path, grpc_addr: str, http_addr: str, batch: int) -> Path:
    conf = workdir / "cerbos.yaml"
    conf.write_text(f"""\
server:
  grpcListenAddr: "{grpc_addr}"
  httpListenAddr: "{http_addr}"
  requestLimits:
    maxActionsPerResource: 50
    maxResourcesPerRequest: {max(batch, 50)}
storage:
  driver: disk
  disk:
    directory: "{policy_dir}"
    watchForChanges: false
audit:
  enabled: false
telemetry:
  disabled: true
""")
    return conf


def start_cerbos(binary: Path, cases: list[str], workdir: Path, batch: int) -> gl.ServerProcess:
    policy_dir = workdir / "cerbos-policies"
    policy_dir.mkdir()
    if "smuggling" in cases:
        shutil.copy(POLICY_DIR / "smuggling.yaml", policy_dir / "smuggling.yaml")
    for c in cases:
        if c != "smuggling":
            (policy_dir / f"generated_{c}.yaml").write_text(gen_cerbos_policy(int(c)))
    grpc_addr = f"{gl.HOST}:{gl.free_port()}"
    http_addr = f"{gl.HOST}:{gl.free_port()}"
    conf = write_cerbos_config(workdir, policy_dir, grpc_addr, http_addr, batch)
    env = {**os.environ, "CERBOS_NO_TELEMETRY": "1"}
    cmd = [str(binary), "server", f"--config={conf}", "--log-level=warn"]
    server = gl.ServerProcess("cerbos", cmd, grpc_addr, workdir, env=env, ready_text=None, health=False, start_timeout=60)
    server.start()
    return server


# ============================================================================================
# Requests (built in each client process, see grpc_load._load_builder)
# ============================================================================================

def _corpus(case: str) -> list[dict]:
    if case == "smuggling":
        return corpus_mod.smuggling_corpus(gl.CORPUS_SIZE, seed=0)
    return corpus_mod.generated_corpus(int(case), gl.CORPUS_SIZE)


def _kind(case: str) -> str:
    return "content" if case == "smuggling" else f"generated_{case}"


def _actions(case: str) -> tuple[str, ...]:
    return SMUGGLING_ACTIONS if case == "smuggling" else GEN_ACTIONS


def cerbos_requests(case: str, per_request: int) -> list:
    from cerbos.engine.v1 import engine_pb2
    from cerbos.request.v1 import request_pb2
    from google.protobuf import json_format

    principal = engine_pb2.Principal(id="moderation-pipeline", roles=["service"], policy_version="default")
    entries = []
    for i, a in enumerate(_corpus(case)):
        resource = json_format.ParseDict({"kind": _kind(case), "id": f"item-{i}", "policyVersion": "default", "attr": a},
                                         engine_pb2.Resource())
        entries.append(request_pb2.CheckResourcesRequest.ResourceEntry(actions=list(_actions(case)), resource=resource))
    return [request_pb2.CheckResourcesRequest(request_id=f"r{k}", principal=principal, resources=entries[k:k + per_request])
            for k in range(0, len(entries) - per_request + 1, per_request)]


def cerbos_verdicts(response) -> list[str]:
    from cerbos.effect.v1 import effect_pb2

    out = []
    for r in response.results:
        allowed = {a for a, e in r.actions.items() if e == effect_pb2.EFFECT_ALLOW}
        out.append("remove" if "remove" in allowed else "intervene" if "intervene" in allowed else "allow")
    return out


def cerbos_work(mode: str, case: str = "smuggling", batch: int = 100) -> gl.Work:
    from cerbos.response.v1 import response_pb2

    per = 1 if mode == "unary" else batch
    reqs = cerbos_requests(case, per)

    def check(raw: bytes) -> int:
        r = response_pb2.CheckResourcesResponse.FromString(raw)
        return abs(len(r.results) - per) + sum(1 for x in r.results if x.validation_errors)

    return gl.Work(CHECK_RESOURCES, [r.SerializeToString() for r in reqs], per, check=check)


def verify(address: str, case: str, batch: int) -> dict:
    """Cerbos's verdict against pol's engine on every corpus item."""
    import grpc
    from cerbos.response.v1 import response_pb2

    import engine

    if case == "smuggling":
        ps = engine.load_path(str(ROOT / "policies")).policy_set
    else:
        ps = engine.compile_sources({"bench.pol": corpus_mod.gen_source(int(case))}).policy_set
    items = _corpus(case)
    want = [ps.evaluate(a).verdict for a in items]
    got: list[str] = []
    with grpc.insecure_channel(address) as ch:
        call = ch.unary_unary(CHECK_RESOURCES, request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=response_pb2.CheckResourcesResponse.FromString)
        for req in cerbos_requests(case, batch):
            got += cerbos_verdicts(call(req, timeout=30))
    bad = [(i, w, g) for i, (w, g) in enumerate(zip(want, got)) if w != g]
    return {"items": len(got), "disagreements": len(bad),
            "samples": [f"item {i} {json.dumps(items[i])}: pol {w}, cerbos {g}" for i, w, g in bad[:5]]}


# ============================================================================================
# Main
# ============================================================================================

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 s scenarios")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=None)
    ap.add_argument("--cases", default="smuggling,4,1000", help="smuggling and/or generated rule counts (default smuggling,4,1000)")
    ap.add_argument("--modes", default="unary,batch")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--pol-workers", type=int, default=None, help="pol serve workers (default: 2 if supported, else 1)")
    ap.add_argument("--cerbos-dir", default=str(BENCH / ".cerbos"), help="npm prefix for the cerbos package (default bench/.cerbos)")
    ap.add_argument("--cerbos-bin", default=None, help="use this cerbos binary instead of installing the npm package")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--batch-concurrency", type=int, default=4)
    ap.add_argument("--out", default=str(BENCH / "results" / "cerbos.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.duration = 1.0
    if args.warmup is None:
        args.warmup = 0.3 if args.quick else 1.0
    args.cases = [c for c in args.cases.split(",") if c]
    args.modes = [m for m in args.modes.split(",") if m]
    if not set(args.modes) <= {"unary", "batch"}:
        ap.error("--modes: unary,batch")
    for c in args.cases:
        if c != "smuggling" and not (c.isdigit() and 1 <= int(c) <= 10000):
            ap.error(f"--cases: smuggling or a rule count 1..10000, not {c!r}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = gl.LoadConfig(duration=args.duration, warmup=args.warmup, clients=args.clients, channels=args.channels,
                        concurrency=args.concurrency, batch_concurrency=args.batch_concurrency)
    report: dict = {"benchmark": "cerbos", "machine": gl.machine_info(), "config": vars(cfg) | {"batch": args.batch},
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        binary = Path(args.cerbos_bin) if args.cerbos_bin else install_cerbos(Path(args.cerbos_dir))
        report["cerbos"] = {"binary": str(binary), "version": cerbos_version(binary), "package": NPM_PACKAGE,
                            "api": "gRPC CheckResources (protobuf classes from the cerbos PyPI package)"}
    except Exception as e:  # noqa: BLE001 - say exactly what failed
        report["error"] = f"cannot obtain the cerbos binary: {type(e).__name__}: {e}"
        print(report["error"], file=sys.stderr)
        out.write_text(json.dumps(report, indent=2) + "\n")
        return 1
    try:
        import cerbos.request.v1.request_pb2
    except ImportError as e:
        report["error"] = f"the cerbos PyPI package is needed for its protobuf classes (pip install cerbos): {e}"
        print(report["error"], file=sys.stderr)
        out.write_text(json.dumps(report, indent=2) + "\n")
        return 1
    pol_workers = args.pol_workers or (2 if gl.pol_workers_supported() else 1)
    print(f"pol vs Cerbos  ({report['cerbos']['version']}, python {platform.python_version()}, {os.cpu_count()} cpus, "
          f"pol serve --workers {pol_workers}, {cfg.clients} client processes, {cfg.duration:g} s per scenario; "
          "client and servers share the machine)", flush=True)

    rows: list[dict] = []
    verification: dict = {}
    me = str(Path(__file__).resolve())
    with tempfile.TemporaryDirectory(prefix="pol-cerbos-") as tmp:
        workdir = Path(tmp)
        cerbos = start_cerbos(binary, args.cases, workdir, args.batch)
        try:
            for case in args.cases:
                verification[case] = v = verify(cerbos.address, case, args.batch)
                print(f"  verify {case}: {v['items']} items, {v['disagreements']} disagreements with pol", file=sys.stderr)
                for s in v["samples"]:
                    print("    " + s, file=sys.stderr)
                for mode in args.modes:
                    print(f"  cerbos {case} {mode} ...", end="", flush=True, file=sys.stderr)
                    r = gl.run_load(cerbos.address, (me, "cerbos_work", {"mode": mode, "case": case, "batch": args.batch}), mode, cfg)
                    print(" " + (gl.fmt_rate(r.get("decisions_per_s")) + " decisions/s" if "error" not in r else r["error"]), file=sys.stderr)
                    rows.append({"server": "cerbos", "case": case, "mode": mode, "workers": None, **r})
        finally:
            cerbos.stop()
        for case in args.cases:
            pdir = ROOT / "policies"
            if case != "smuggling":
                pdir = workdir / f"pol-{case}"
                pdir.mkdir()
                (pdir / f"generated_{case}.pol").write_text(corpus_mod.gen_source(int(case)))
            try:
                server = gl.start_pol(pdir, pol_workers, workdir, tag=f"pol-{case}")
            except (gl.Pending, RuntimeError) as e:
                rows += [{"server": "pol", "case": case, "mode": m, "workers": pol_workers, "error": str(e)[:2000]} for m in args.modes]
                continue
            try:
                for mode in args.modes:
                    print(f"  pol {case} {mode} ...", end="", flush=True, file=sys.stderr)
                    spec = ("bench.grpc_load", "pol_work", {"mode": mode, "case": case, "batch": args.batch})
                    r = gl.run_load(server.address, spec, mode, cfg)
                    print(" " + (gl.fmt_rate(r.get("decisions_per_s")) + " decisions/s" if "error" not in r else r["error"]), file=sys.stderr)
                    rows.append({"server": "pol", "case": case, "mode": mode, "workers": pol_workers, **r})
            finally:
                server.stop()

    def get(server, case, mode):
        return next((r for r in rows if r["server"] == server and r["case"] == case and r["mode"] == mode
                     and r.get("calls")), None)  # no completed call: not measured

    head = ("case", "mode", "pol req/s", "pol dec/s", "pol p50", "pol p99", "cerbos req/s", "cerbos dec/s", "cerbos p50", "cerbos p99", "pol/cerbos")
    lines = [head]
    for case in args.cases:
        for mode in args.modes:
            p, c = get("pol", case, mode), get("cerbos", case, mode)
            ratio = f"{p['decisions_per_s'] / c['decisions_per_s']:.2f}x" if p and c and c["decisions_per_s"] else "-"
            lines.append((case, mode,
                          gl.fmt_rate(p and p["requests_per_s"]), gl.fmt_rate(p and p["decisions_per_s"]),
                          gl.fmt_ms(p and p["p50_ms"]), gl.fmt_ms(p and p["p99_ms"]),
                          gl.fmt_rate(c and c["requests_per_s"]), gl.fmt_rate(c and c["decisions_per_s"]),
                          gl.fmt_ms(c and c["p50_ms"]), gl.fmt_ms(c and c["p99_ms"]), ratio))
    widths = [max(len(x[i]) for x in lines) for i in range(len(head))]
    print("\nResults (latency in ms, per call):")
    for j, line in enumerate(lines):
        print("  ".join(x.rjust(w) if i > 1 else x.ljust(w) for i, (x, w) in enumerate(zip(line, widths))).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))
    errors = [r for r in rows if r.get("error")]
    for r in errors:
        print(f"  error: {r['server']} {r['case']} {r['mode']}: {r['error']}")

    checks = []
    for case in args.cases:
        p, c = get("pol", case, "batch"), get("cerbos", case, "batch")
        t = {"check": f"pol batch decides more items/s than Cerbos ({case})"}
        if p and c:
            t.update(value=f"{p['decisions_per_s']:,.0f} vs {c['decisions_per_s']:,.0f}",
                     result="PASS" if p["decisions_per_s"] > c["decisions_per_s"] else "FAIL")
        else:
            t.update(value="-", result="NOT RUN")
        checks.append(t)
    big = max((int(c) for c in args.cases if c != "smuggling"), default=None)
    small = min((int(c) for c in args.cases if c != "smuggling"), default=None)
    if big and small and big != small:
        p_s, p_b = get("pol", str(small), "unary"), get("pol", str(big), "unary")
        c_s, c_b = get("cerbos", str(small), "unary"), get("cerbos", str(big), "unary")
        t = {"check": f"pol holds its unary rate at {big} rules (>= {HOLD_RATIO:.0%} of its {small}-rule rate)"}
        if p_s and p_b:
            ratio = p_b["requests_per_s"] / p_s["requests_per_s"]
            t.update(value=f"{p_b['requests_per_s']:,.0f} vs {p_s['requests_per_s']:,.0f} req/s = {ratio:.0%}",
                     result="PASS" if ratio >= HOLD_RATIO else "FAIL")
            if c_s and c_b:
                t["cerbos"] = f"{c_b['requests_per_s']:,.0f} vs {c_s['requests_per_s']:,.0f} req/s = {c_b['requests_per_s'] / c_s['requests_per_s']:.0%}"
        else:
            t.update(value="-", result="NOT RUN")
        checks.append(t)
    print("\nChecks:")
    for t in checks:
        print(f"  {t['result']:8} {t['check']}: {t['value']}" + (f"  (Cerbos: {t['cerbos']})" if t.get("cerbos") else ""))
    report.update(pol_workers=pol_workers, verification=verification, rows=rows, checks=checks)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
