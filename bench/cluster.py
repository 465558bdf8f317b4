#!/usr/bin/env python3
"""Install benchmarks against the kubectl sequence, on the test control plane.

Runs inside the test network namespace (`scripts/testenv exec -- python3 bench/cluster.py ...`):
KUBECONFIG, GRIDOS_TESTENV_STATE and the pinned kubectl on PATH come from there. The control plane
must have been started with `scripts/testenv up --audit-log`.

Usage: cluster.py --bin BIN --rounds N --out DIR [--smoke] [--host HOST]
Prints the Markdown section `## install` on stdout, keeps the raw figures in DIR/install.json.
Exits non-zero only when a command fails, never on a missed target.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PROFILE = "nginx"
LB_SERVICE = ("ingress-nginx", "ingress-nginx-controller")
LB_LATENCY_DELAY = "2s"
WAIT_TIMEOUT = "300s"

# Targets (reported, never asserted).
T_FRESH_RATIO = 0.5
T_NOOP_MS = 500.0
T_NOOP_RATIO = 0.25
T_NOOP_EXTRA_REQUESTS = 5
T_ADDRESS_MS = 200.0
T_RSS_MIB = 40.0
T_RENDER_MS = 20.0

CATEGORIES = ["discovery", "apply", "get", "list", "watch", "create", "update", "delete", "other"]


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class CommandFailed(Exception):
    pass


def run(argv, check=True, capture=True, timeout=600):
    r = subprocess.run(argv, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=timeout)
    if check and r.returncode != 0:
        raise CommandFailed(f"{' '.join(argv)} exited {r.returncode}: "
                            f"{r.stderr.decode(errors='replace').strip()[-2000:]}")
    return r


def kubectl(*args, check=True):
    return run(["kubectl", *args], check=check)


# ---------------------------------------------------------------- manifests


def split_docs(text):
    """Top-level kind, name and namespace of each YAML document, without a YAML library."""
    docs = []
    for raw in re.split(r"^---[ \t]*$", text, flags=re.M):
        kind = name = ns = api = None
        in_meta = False
        for line in raw.splitlines():
            if line.startswith("apiVersion:"):
                api = line.split(":", 1)[1].strip()
            if line.startswith("kind:"):
                kind = line.split(":", 1)[1].strip()
            if line.startswith("metadata:"):
                in_meta = True
                continue
            if in_meta:
                if line and not line.startswith(" ") and not line.startswith("#"):
                    in_meta = False
                elif line.startswith("  name:") and name is None:
                    name = line.split(":", 1)[1].strip().strip("'\"")
                elif line.startswith("  namespace:"):
                    ns = line.split(":", 1)[1].strip().strip("'\"")
        if kind:
            group = api.rsplit("/", 1)[0] if api and "/" in api else ""
            docs.append({"kind": kind, "name": name, "namespace": ns, "group": group,
                         "text": raw.strip("\n")})
    return docs


def write_docs(path, docs):
    with open(path, "w") as f:
        f.write("\n---\n".join(d["text"] for d in docs) + "\n")


# ---------------------------------------------------------------- audit log


class Audit:
    """Requests the apiserver logged between mark() and since(), by user agent."""

    def __init__(self, path):
        self.path = path
        if not os.path.exists(path):
            raise CommandFailed(f"no audit log at {path}: start the control plane with "
                                "`scripts/testenv up --audit-log`")

    def mark(self):
        return os.path.getsize(self.path)

    def since(self, offset, agent_prefix):
        # A watch is logged when its connection closes, just after the client exits: wait until
        # the file stops growing.
        size, stable = os.path.getsize(self.path), 0
        for _ in range(20):
            time.sleep(0.1)
            now = os.path.getsize(self.path)
            stable = stable + 1 if now == size else 0
            size = now
            if stable >= 3:
                break
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read(size - offset)
        counts = {c: 0 for c in CATEGORIES}
        seen = set()
        for line in data.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if not ev.get("userAgent", "").startswith(agent_prefix):
                continue
            if ev.get("auditID") in seen:
                continue
            seen.add(ev.get("auditID"))
            counts[classify(ev)] += 1
        counts["total"] = sum(counts[c] for c in CATEGORIES)
        return counts


def classify(ev):
    verb = ev.get("verb", "")
    uri = ev.get("requestURI", "")
    path = uri.split("?", 1)[0]
    if "objectRef" not in ev and re.match(r"^/(api|apis|openapi|version)(/|$)", path):
        return "discovery"
    if verb == "patch":
        # Server-side apply must name a field manager; the contenders send no other patches.
        return "apply" if "fieldManager=" in uri else "other"
    if verb in ("get", "list", "watch", "create", "update"):
        return verb
    if verb in ("delete", "deletecollection"):
        return "delete"
    return "other"


# ---------------------------------------------------------------- timed processes


def timed(argv, env=None, on_line=None):
    """Runs argv under GNU time; returns (wall ms, peak RSS KiB, stdout lines with arrival time)."""
    with tempfile.NamedTemporaryFile(prefix="bench-time-", delete=False) as tf:
        tfile = tf.name
    full = ["/usr/bin/time", "-f", "%M", "-o", tfile, *argv]
    lines = []
    t0 = time.perf_counter()
    p = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    err = []
    t_err = threading.Thread(target=lambda: err.append(p.stderr.read()))
    t_err.start()
    for raw in p.stdout:
        lines.append((time.time(), raw.decode(errors="replace").rstrip("\n")))
    p.wait()
    t1 = time.perf_counter()
    t_err.join()
    rss = None
    try:
        with open(tfile) as f:
            rss = int(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        pass
    os.unlink(tfile)
    if p.returncode != 0:
        raise CommandFailed(f"{' '.join(argv)} exited {p.returncode}: "
                            f"{err[0].decode(errors='replace').strip()[-2000:]}")
    return (t1 - t0) * 1e3, rss, lines


class Bench:
    def __init__(self, args):
        self.bin = os.path.abspath(args.bin)
        self.host = args.host
        self.out = args.out
        self.rounds = args.rounds
        self.smoke = args.smoke
        state = os.environ.get("GRIDOS_TESTENV_STATE")
        if not state:
            raise CommandFailed("GRIDOS_TESTENV_STATE is not set: run under `scripts/testenv exec`")
        self.state = state
        self.audit = Audit(os.path.join(state, "audit", "audit.jsonl"))
        self.lb_log = os.path.join(state, "logs", "lb-standin.log")
        self.kubectl = shutil.which("kubectl")
        self.prepare_manifests()

    # ------------------------------------------------------------ set-up

    def prepare_manifests(self):
        text = run([self.bin, "render", "--profile", PROFILE, "--host", self.host]).stdout.decode()
        docs = split_docs(text)
        has_sm = kubectl("get", "crd", "servicemonitors.monitoring.coreos.com",
                         check=False).returncode == 0
        # gridos-setup skips the ServiceMonitor when the cluster serves no ServiceMonitor CRD (the
        # test cluster does not); kubectl would fail on it, so both apply the same objects.
        self.skipped = [] if has_sm else [d for d in docs if d["kind"] == "ServiceMonitor"]
        docs = [d for d in docs if has_sm or d["kind"] != "ServiceMonitor"]
        self.docs = docs
        crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
        rest = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
        deploys = [d for d in docs if d["kind"] == "Deployment"]
        names = ("all", "crds", "rest", "deployments", "reset")
        self.files = {n: os.path.join(self.out, f"install-{n}.yaml") for n in names}
        # Custom resources go with their CRD or namespace; kubectl delete cannot map them once the
        # CRD is gone.
        crd_groups = {m for d in crds for m in re.findall(r"^  group: *(\S+)", d["text"], re.M)}
        write_docs(self.files["reset"], [d for d in crds + rest if d["group"] not in crd_groups])
        write_docs(self.files["all"], crds + rest)
        write_docs(self.files["crds"], crds)
        write_docs(self.files["rest"], rest)
        write_docs(self.files["deployments"], deploys)
        self.namespaces = sorted({d["name"] for d in docs if d["kind"] == "Namespace"})
        self.n_objects = len(docs)
        self.n_deployments = len(deploys)

    def set_lb_delay(self, delay):
        cm = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "gridos-lb-standin", "namespace": "kube-system"},
              "data": {"delay": delay}}
        p = subprocess.run(["kubectl", "apply", "-f", "-"], input=json.dumps(cm).encode(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise CommandFailed(f"setting the lb-standin delay: {p.stderr.decode().strip()}")

    def reset(self):
        """Back to a cluster without anything either contender installed."""
        done = kubectl("delete", "-f", self.files["reset"], "--ignore-not-found", "--wait=true",
                       "--timeout=30s", check=False)
        if done.returncode != 0:
            self.unstick_crds()
            kubectl("delete", "-f", self.files["reset"], "--ignore-not-found", "--wait=true",
                    "--timeout=300s")
        kubectl("delete", "configmap", "-n", "kube-system", "gridos-setup", "--ignore-not-found")
        for ns in self.namespaces:
            kubectl("wait", "--for=delete", f"namespace/{ns}", "--timeout=300s", check=False)
        left = kubectl("get", "namespaces", "-o", "name").stdout.decode().split()
        still = [n for n in self.namespaces if f"namespace/{n}" in left]
        if still:
            raise CommandFailed(f"reset: namespaces still present: {still}")

    def unstick_crds(self):
        """A CRD deleted seconds after its creation can stay Terminating for minutes: its
        finalizer's first list of instances fails with "storage is (re)initializing" and the
        controller retries with exponential backoff (kubernetes/kubernetes crd_finalizer.go;
        seen in operator-framework/operator-controller#1437). When no instance is left, the
        finalizer has nothing to do, so the reset removes it instead of waiting."""
        out = kubectl("get", "-f", self.files["crds"], "--ignore-not-found", "-o", "json",
                      check=False).stdout.decode()
        got = json.loads(out) if out.strip() else {}
        items = got.get("items", [got] if got.get("kind") == "CustomResourceDefinition" else [])
        for crd in items:
            conds = crd.get("status", {}).get("conditions", [])
            stuck = any(c.get("type") == "Terminating" and c.get("reason") == "InstanceDeletionFailed"
                        for c in conds)
            if not stuck:
                continue
            name = crd["metadata"]["name"]
            left = kubectl("get", name, "-A", "-o", "name", check=False).stdout.decode().split()
            if left:
                continue
            log(f"reset: CRD {name} stuck Terminating (InstanceDeletionFailed), no instances left: "
                "removing its finalizer")
            kubectl("patch", "crd", name, "--type=json",
                    "-p", '[{"op":"remove","path":"/metadata/finalizers"}]', check=False)

    # ------------------------------------------------------------ contenders

    def gridos_argv(self):
        return [self.bin, "install", "--profile", PROFILE, "--host", self.host, "--yes",
                "-o", "json"]

    def gridos(self):
        mark = self.audit.mark()
        t0 = time.time()
        wall, rss, lines = timed(self.gridos_argv())
        summary = parse_summary(lines)
        req = self.audit.since(mark, "gridos-setup/")
        return {"wall_ms": wall, "rss_kib": rss, "requests": req, "summary": summary,
                "phases": phases(t0, lines)}

    def kubectl_fresh(self):
        seq = [
            ["kubectl", "apply", "--server-side", "-f", self.files["crds"]],
            ["kubectl", "wait", "--for=condition=Established", f"--timeout={WAIT_TIMEOUT}",
             "-f", self.files["crds"]],
            ["kubectl", "apply", "--server-side", "-f", self.files["rest"]],
            ["kubectl", "wait", "--for=condition=Available", f"--timeout={WAIT_TIMEOUT}",
             "-f", self.files["deployments"]],
            ["kubectl", "wait", "--for=jsonpath={.status.loadBalancer.ingress[0].ip}",
             f"--timeout={WAIT_TIMEOUT}", "-n", LB_SERVICE[0], f"service/{LB_SERVICE[1]}"],
        ]
        return self.kubectl_seq(seq)

    def kubectl_noop(self):
        return self.kubectl_seq([["kubectl", "apply", "--server-side", "-f", self.files["all"]]])

    def kubectl_seq(self, seq):
        mark = self.audit.mark()
        t0 = time.perf_counter()
        rss = 0
        for argv in seq:
            for attempt in range(5):
                try:
                    _, r, _ = timed(argv)
                    break
                except CommandFailed as e:
                    # kubectl wait gives up at once instead of waiting when a just-created CRD has
                    # no status.conditions yet (".status.conditions accessor error: <nil> is of the
                    # type <nil>", as seen in pingcap/tidb-operator#1511's CI); a script around
                    # kubectl has to run it again too, so the retry counts in kubectl's time.
                    if "accessor error: <nil>" not in str(e) or attempt == 4:
                        raise
            rss = max(rss, r or 0)
        wall = (time.perf_counter() - t0) * 1e3
        req = self.audit.since(mark, "kubectl/")
        return {"wall_ms": wall, "rss_kib": rss or None, "requests": req}

    # ------------------------------------------------------------ benchmarks

    def rounds_fresh_noop(self):
        self.set_lb_delay("0")
        res = {"gridos": {"fresh": [], "noop": []}, "kubectl": {"fresh": [], "noop": []}}
        contenders = {
            "gridos": (self.gridos, self.gridos),
            "kubectl": (self.kubectl_fresh, self.kubectl_noop),
        }
        n_warm = 0 if self.smoke else 1
        for i in range(n_warm + self.rounds):
            order = ["gridos", "kubectl"] if i % 2 == 0 else ["kubectl", "gridos"]
            label = "warm-up" if i < n_warm else f"round {i - n_warm + 1}/{self.rounds}"
            for c in order:
                self.reset()
                fresh_fn, noop_fn = contenders[c]
                fresh = fresh_fn()
                noop = noop_fn()
                log(f"{label} {c}: fresh {fresh['wall_ms']:.0f} ms ({fresh['requests']['total']} requests), "
                    f"no-op {noop['wall_ms']:.0f} ms ({noop['requests']['total']} requests)")
                if i >= n_warm:
                    res[c]["fresh"].append(fresh)
                    res[c]["noop"].append(noop)
        return res

    def address_latency(self):
        """Address set by the stand-in (its log) -> the line of gridos-setup's output carrying it."""
        self.set_lb_delay(LB_LATENCY_DELAY)
        samples = []
        n = self.rounds
        for i in range(n):
            self.reset()
            t_start_ms = time.time() * 1e3
            wall, _, lines = timed(self.gridos_argv())
            # The stand-in logs after its PATCH returns, which can be after gridos-setup saw the
            # address and exited.
            set_ms, ip = None, None
            for _ in range(50):
                set_ms, ip = self.address_set_after(t_start_ms)
                if ip is not None:
                    break
                time.sleep(0.1)
            if ip is None:
                raise CommandFailed("lb-standin did not log `address set` for "
                                    f"{LB_SERVICE[0]}/{LB_SERVICE[1]}")
            reported = next(((t, l) for t, l in lines if ip in l), None)
            if reported is None:
                raise CommandFailed(f"gridos-setup never printed the address {ip}")
            t, line = reported
            event = json.loads(line).get("event", "?") if line.startswith("{") else "?"
            lat = t * 1e3 - set_ms
            log(f"address latency {i + 1}/{n}: {lat:.0f} ms (event {event}, install {wall:.0f} ms)")
            samples.append({"latency_ms": lat, "event": event, "wall_ms": wall})
        self.set_lb_delay("0")
        return samples

    def address_set_after(self, t_ms):
        pat = re.compile(r"address set (\S+)/(\S+) (\S+) at_unix_ms=(\d+)")
        found = (None, None)
        with open(self.lb_log, errors="replace") as f:
            for line in f:
                m = pat.search(line)
                if m and (m.group(1), m.group(2)) == LB_SERVICE and int(m.group(4)) >= t_ms:
                    found = (int(m.group(4)), m.group(3))
        return found

    def render_times(self):
        samples = []
        argv = [self.bin, "render", "--profile", PROFILE, "--host", self.host]
        for i in range(self.rounds + 1):
            t0 = time.perf_counter()
            run(argv, capture=False)
            if i:
                samples.append((time.perf_counter() - t0) * 1e3)
        return samples

    def versions(self):
        kv = json.loads(kubectl("version", "-o", "json").stdout)
        return {
            "gridos-setup": run([self.bin, "--version"]).stdout.decode().strip(),
            "kubectl": kv.get("clientVersion", {}).get("gitVersion", "?"),
            "kube-apiserver": kv.get("serverVersion", {}).get("gitVersion", "?"),
        }


def parse_summary(lines):
    for _, line in reversed(lines):
        if line.startswith("{"):
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "summary":
                return {
                    "address": ev.get("address"),
                    "objects": len(ev.get("objects", [])),
                    "results": count_results(ev.get("objects", [])),
                    "durations": ev.get("durations"),
                }
    raise CommandFailed("gridos-setup printed no summary")


PHASES = [
    ("start -> first event", "target"),
    ("-> CRDs applied", "waiting for CRD"),
    ("-> Deployments applied", "waiting for Deployment"),
    ("-> rollouts done", "applying"),
    ("-> address wait starts", "waiting for the load-balancer address"),
    ("-> summary", "summary"),
]


def phases(t0, lines):
    """When each phase of a gridos-setup run ended (ms after spawn), from its JSON events."""
    marks, i = {}, 0
    for t, line in lines:
        if i >= len(PHASES) or not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        text = ev.get("event", "") + " " + str(ev.get("detail", ""))
        # Phases are matched in order, so "applying" after the rollout waits marks their end.
        if PHASES[i][1] in text:
            marks[PHASES[i][0]] = (t - t0) * 1e3
            i += 1
    return marks


def count_results(objs):
    c = {}
    for o in objs:
        c[o.get("result")] = c.get(o.get("result"), 0) + 1
    return c


# ---------------------------------------------------------------- report


def mmm(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return statistics.median(xs), min(xs), max(xs)


def fmt_mmm(t, unit="ms", digits=0):
    if t is None:
        return "–"
    med, lo, hi = t
    f = f"{{:.{digits}f}}"
    if lo == hi:
        return f"{f.format(med)} {unit}".strip()
    return f"{f.format(med)} {unit} ({f.format(lo)}–{f.format(hi)})".replace("  ", " ")


def yes(ok):
    return "yes" if ok else "**no**"


def report(b, res, lat, render, versions):
    g, k = res["gridos"], res["kubectl"]
    gf = mmm([r["wall_ms"] for r in g["fresh"]])
    kf = mmm([r["wall_ms"] for r in k["fresh"]])
    gn = mmm([r["wall_ms"] for r in g["noop"]])
    kn = mmm([r["wall_ms"] for r in k["noop"]])
    g_rss = mmm([r["rss_kib"] / 1024 for r in g["fresh"] + g["noop"] if r["rss_kib"]])
    k_rss = mmm([r["rss_kib"] / 1024 for r in k["fresh"] + k["noop"] if r["rss_kib"]])
    applied = g["noop"][0]["summary"]["objects"] if g["noop"] else b.n_objects
    g_noop_req = mmm([r["requests"]["total"] for r in g["noop"]])
    latm = mmm([s["latency_ms"] for s in lat])
    rend = mmm(render)
    size = os.path.getsize(b.bin)

    out = []
    w = out.append
    w("## install")
    w("")
    w(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · commit {os.environ.get('BENCH_COMMIT', '?')}"
      + (" · **smoke run (1 round, no warm-up), not representative**" if b.smoke else ""))
    w("")
    w(f"gridos-setup `install --profile {PROFILE} --host {b.host} --yes -o json` against the kubectl "
      f"sequence on `gridos-setup render` output, on the test control plane "
      f"(kube-apiserver {versions['kube-apiserver']}, kwok nodes and pods, lb-standin). "
      f"{b.rounds} round(s)" + ("" if b.smoke else " after 1 warm-up round")
      + "; each round resets the cluster before each contender and alternates which one goes first. "
      "Figures: median (min–max).")
    w("")
    w("| | |")
    w("|---|---|")
    w(f"| gridos-setup | {versions['gridos-setup']} |")
    w(f"| kubectl | {versions['kubectl']} (pinned, from the test control plane) |")
    w(f"| objects | {b.n_objects} rendered and applied by both"
      + (f" ({len(b.skipped)} ServiceMonitor left out: the cluster serves no ServiceMonitor CRD, "
         "gridos-setup skips it too)" if b.skipped else "")
      + f"; gridos-setup's no-op summary lists {applied} |")
    w("")
    w("### Targets")
    w("")
    w("| figure | gridos-setup | kubectl | target | met |")
    w("|---|---:|---:|---|:---:|")
    if gf and kf:
        ratio = gf[0] / kf[0]
        w(f"| fresh install, API phase | {fmt_mmm(gf)} | {fmt_mmm(kf)} | <= {T_FRESH_RATIO}x kubectl "
          f"(is {ratio:.2f}x) | {yes(ratio <= T_FRESH_RATIO)} |")
    if gn and kn:
        ratio = gn[0] / kn[0]
        w(f"| no-op re-run | {fmt_mmm(gn)} | {fmt_mmm(kn)} | <= {T_NOOP_MS:.0f} ms and <= "
          f"{T_NOOP_RATIO}x kubectl (is {ratio:.2f}x) | {yes(gn[0] <= T_NOOP_MS and ratio <= T_NOOP_RATIO)} |")
    if g_noop_req:
        limit = applied + T_NOOP_EXTRA_REQUESTS
        kreq = mmm([r["requests"]["total"] for r in k["noop"]])
        w(f"| requests on a no-op | {fmt_mmm(g_noop_req, '')} | {fmt_mmm(kreq, '')} | <= objects + "
          f"{T_NOOP_EXTRA_REQUESTS} = {limit} | {yes(g_noop_req[0] <= limit)} |")
    if latm:
        w(f"| address set -> reported | {fmt_mmm(latm)} | – | <= {T_ADDRESS_MS:.0f} ms | "
          f"{yes(latm[0] <= T_ADDRESS_MS)} |")
    if g_rss:
        w(f"| peak RSS (max over fresh and no-op runs; kubectl: its largest process) | "
          f"{g_rss[2]:.1f} MiB | {k_rss[2]:.1f} MiB | <= {T_RSS_MIB:.0f} MB | "
          f"{yes(g_rss[2] * 1.048576 <= T_RSS_MIB)} |" if k_rss else "")
    if rend:
        w(f"| `render --profile {PROFILE}` | {fmt_mmm(rend, 'ms', 1)} | – | <= {T_RENDER_MS:.0f} ms | "
          f"{yes(rend[0] <= T_RENDER_MS)} |")
    w(f"| release binary size | {size / 1048576:.2f} MiB | {os.path.getsize(b.kubectl) / 1048576:.2f} MiB | – | |")
    w("")
    w("### Requests per run (apiserver audit log, by user agent)")
    w("")
    w("Counted from the test apiserver's audit log (`scripts/testenv up --audit-log`, level Metadata, "
      "one event per request), user agent `gridos-setup/...` or `kubectl/...`. discovery: GET of "
      "/api, /apis, /openapi, /version paths; apply: PATCH with a `fieldManager` (server-side apply); "
      "watch counts each watch connection. Median per round; the total's range in brackets.")
    w("")
    w("| run | " + " | ".join(CATEGORIES) + " | total |")
    w("|---|" + "---:|" * (len(CATEGORIES) + 1))
    for name, runs in (("gridos-setup fresh", g["fresh"]), ("kubectl fresh", k["fresh"]),
                       ("gridos-setup no-op", g["noop"]), ("kubectl no-op", k["noop"])):
        if not runs:
            continue
        cells = [f"{statistics.median([r['requests'][c] for r in runs]):g}" for c in CATEGORIES]
        tot = mmm([r["requests"]["total"] for r in runs])
        w(f"| {name} | " + " | ".join(cells) + f" | {fmt_mmm(tot, '')} |")
    w("")
    w("### Per round")
    w("")
    w("| contender | run | wall ms per round | peak RSS MiB per round |")
    w("|---|---|---|---|")
    for cname, c in (("gridos-setup", g), ("kubectl", k)):
        for run_name in ("fresh", "noop"):
            rs = c[run_name]
            walls = ", ".join(f"{r['wall_ms']:.0f}" for r in rs)
            rss = ", ".join(f"{(r['rss_kib'] or 0) / 1024:.1f}" for r in rs)
            w(f"| {cname} | {run_name} | {walls} | {rss} |")
    if g["fresh"] and g["fresh"][0]["summary"].get("durations"):
        d = [r["summary"]["durations"] for r in g["fresh"]]
        w("")
        w("gridos-setup's own summary durations, fresh (median ms): "
          + ", ".join(f"{key} {statistics.median([x.get(key) or 0 for x in d]):.0f}"
                      for key in d[0].keys()) + ".")
    if g["fresh"]:
        w("")
        w("gridos-setup fresh install, where the time goes (ms after spawn, median; from the "
          "arrival of its `-o json` events):")
        w("")
        w("| " + " | ".join(p for p, _ in PHASES) + " |")
        w("|" + "---:|" * len(PHASES))
        cells = []
        for p, _ in PHASES:
            xs = [r["phases"].get(p) for r in g["fresh"] if r["phases"].get(p) is not None]
            cells.append(f"{statistics.median(xs):.0f}" if xs else "–")
        w("| " + " | ".join(cells) + " |")
    w("")
    w("### How it is measured")
    w("")
    w("- **Fresh install, API phase**: from a reset cluster (lb-standin delay 0) until every object "
      "is applied, every Deployment is Available and the LoadBalancer address is set. kwok makes "
      "pods ready at once, so this measures the installer, not image pulls. gridos-setup: one "
      "process, wall time. kubectl: `apply --server-side -f crds.yaml`; `wait "
      "--for=condition=Established -f crds.yaml`; `apply --server-side -f rest.yaml`; `wait "
      "--for=condition=Available -f deployments.yaml`; `wait "
      "--for=jsonpath={.status.loadBalancer.ingress[0].ip} service/...`: the sum of the five, "
      "spawns included.")
    w("- **No-op re-run**: the same install again right after; kubectl: one `apply --server-side -f "
      "all.yaml`. gridos-setup still checks rollouts and the address, kubectl does not.")
    w("- **Reset** before each contender: `kubectl delete --wait` of every rendered object but the "
      "custom resources (they go with their CRDs and namespaces), the ApplySet parent ConfigMap "
      "kube-system/gridos-setup, then a wait until the namespaces are gone, so both start from the "
      "same state.")
    w(f"- **Address set -> reported**: lb-standin delay {LB_LATENCY_DELAY}; a fresh gridos-setup "
      "install with `-o json`, each stdout line timestamped on arrival (Python, same clock); "
      "compared with the stand-in's `address set ... at_unix_ms=` log line, which the stand-in stamps "
      "after its status PATCH returned, so gridos-setup's watch can see the address a few ms "
      "earlier (a negative figure). The reporting event: "
      + ", ".join(sorted({s['event'] for s in lat})) + f"; per round: "
      + ", ".join(f"{s['latency_ms']:.0f}" for s in lat) + " ms.")
    w("- **Peak RSS**: `/usr/bin/time -f %M` (GNU time) around each process.")
    w("- **render**: wall time of `gridos-setup render`, process start to exit, measured here while "
      "the control plane runs beside it; the render section's figure (control plane idle or down) "
      "is the one to compare across commits.")
    w("- The machine is shared (other builds and tests may run alongside): expect noise, compare "
      "medians, and re-run on a quiet machine before drawing conclusions.")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--host", default="app.example.com")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    try:
        b = Bench(args)
        versions = b.versions()
        res = b.rounds_fresh_noop()
        lat = b.address_latency()
        render = b.render_times()
        b.reset()
    except (CommandFailed, subprocess.TimeoutExpired) as e:
        log(f"error: {e}")
        return 1
    with open(os.path.join(args.out, "install.json"), "w") as f:
        json.dump({"results": res, "address_latency": lat, "render_ms": render,
                   "versions": versions}, f, indent=1)
    sys.stdout.write(report(b, res, lat, render, versions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
