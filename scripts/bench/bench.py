#!/usr/bin/env python3
"""Helpers for scripts/bench-vs-dpdk.sh (stdlib only).

  bench.py cnt            < bpftool -j map dump     -> "PACKETS BYTES"
  bench.py ping FILE                                -> JSON {sent, received, loss_pct, p50_us, p99_us, p999_us}
  bench.py testpmd FILE                             -> JSON {tx, tx_dropped, rx} (accumulated, from the exit stats)
  bench.py shuntgen FILE...                         -> JSON {tx, tx_dropped, rx}, summed over `shunt-gen --json` summaries
  bench.py hist FILE                                -> JSON {p50_us, p99_us, p999_us, count} from `shunt histogram --format json`
  bench.py lat BEFORE AFTER                         -> JSON {count, p50_us, p99_us, p999_us} of the sink's one-way
                                                       latency histogram between two `bpftool -j map dump`s
  bench.py report RESULTS.jsonl OUTDIR META.json    -> OUTDIR/compare.md, OUTDIR/compare.json, table on stdout
"""
import json
import re
import statistics
import sys


def pct(sorted_vals, q):
    """Nearest-rank percentile (q in 0..100) of an already sorted list."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(-(-q * len(sorted_vals) // 100)) - 1))
    return sorted_vals[k]


def percpu_sums(data):
    """{key: value summed over CPUs} of a per-CPU array `bpftool -j map dump`."""
    sums = {}
    for e in data:
        if "formatted" in e:
            e = e["formatted"]
        key = e["key"]
        if isinstance(key, list):
            key = int.from_bytes(bytes(int(b, 16) for b in key), "little")
        for v in e["values"]:
            val = v["value"]
            if isinstance(val, list):
                val = int.from_bytes(bytes(int(b, 16) for b in val), "little")
            sums[int(key)] = sums.get(int(key), 0) + int(val)
    return sums


def cnt():
    sums = percpu_sums(json.load(sys.stdin))
    print(sums.get(0, 0), sums.get(1, 0))


def lat_counts(path):
    """Per-bucket counts of the sink's `bench_lat` map, summed over CPUs."""
    try:
        return percpu_sums(json.load(open(path)))
    except (OSError, ValueError):
        return {}


def lat_bucket_upper_us(idx):
    """Upper edge of a bucket of xdp_sink_count.c's histogram, in µs."""
    unit = 1024 / 1000.0
    if idx < 64:
        return (idx + 1) * unit
    k, sub = 6 + (idx - 64) // 16, (idx - 64) % 16
    return ((17 + sub) << (k - 4)) * unit


def lat(before, after):
    a, b = lat_counts(before), lat_counts(after)
    diff = sorted((k, b.get(k, 0) - a.get(k, 0)) for k in b)
    total = sum(n for _, n in diff)
    out = {"count": total, "p50_us": None, "p99_us": None, "p999_us": None}
    if total:
        for name, q in (("p50_us", 0.50), ("p99_us", 0.99), ("p999_us", 0.999)):
            need, seen = q * total, 0
            for k, n in diff:
                seen += n
                if seen >= need:
                    out[name] = round(lat_bucket_upper_us(k), 1)
                    break
    print(json.dumps(out))


def ping(path):
    rtts, sent, recv = [], None, None
    for line in open(path, errors="replace"):
        m = re.search(r"time=([0-9.]+) ms", line)
        if m:
            rtts.append(float(m.group(1)) * 1000.0)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", line)
        if m:
            sent, recv = int(m.group(1)), int(m.group(2))
    rtts.sort()
    if sent is None:
        sent, recv = len(rtts), len(rtts)
    r = lambda x: None if x is None else round(x, 1)
    print(json.dumps({
        "sent": sent, "received": recv,
        "loss_pct": round(100.0 * (sent - recv) / sent, 2) if sent else None,
        "p50_us": r(pct(rtts, 50)), "p99_us": r(pct(rtts, 99)), "p999_us": r(pct(rtts, 99.9)),
    }))


def testpmd(path):
    text = open(path, errors="replace").read()
    acc = text.split("Accumulated forward statistics for all ports")
    blk = acc[-1] if len(acc) > 1 else ""
    def grab(name):
        m = re.search(name + r":\s+(\d+)", blk)
        return int(m.group(1)) if m else None
    print(json.dumps({"tx": grab("TX-packets"), "tx_dropped": grab("TX-dropped"), "rx": grab("RX-packets")}))


def shuntgen(paths):
    """Sums the final `shunt-gen --json` lines (one file per generator queue)."""
    tx, ok = 0, False
    for path in paths:
        try:
            lines = [l for l in open(path, errors="replace").read().splitlines() if l.startswith("{")]
            tx += int(json.loads(lines[-1])["tx_packets"])
            ok = True
        except Exception:  # noqa: BLE001 - a missing summary reads as "unknown"
            pass
    # shunt-gen waits for TX ring room instead of dropping: nothing to report as dropped.
    print(json.dumps({"tx": tx if ok else None, "tx_dropped": 0 if ok else None, "rx": None}))


def hist(path):
    try:
        d = json.load(open(path))
        lat = d["merged"]["latency"]
        p = lat["percentiles"]
        us = lambda ns: None if ns is None else round(ns / 1000.0, 1)
        print(json.dumps({"count": lat["count"], "p50_us": us(p["p50"]), "p99_us": us(p["p99"]), "p999_us": us(p["p999"])}))
    except Exception as e:  # noqa: BLE001 - report, never fail the run
        print(json.dumps({"error": str(e)}))


LABEL = {
    "shunt-l4lb": "Shunt L4LB (conntrack+maglev+full-NAT)",
    "shunt-l2fwd": "Shunt l2fwd",
    "shunt-l4lb-rt": "Shunt L4LB, SCHED_FIFO worker",
    "shunt-l2fwd-rt": "Shunt l2fwd, SCHED_FIFO worker",
    "testpmd": "testpmd mac (af_xdp)",
    "testpmd-rt": "testpmd mac (af_xdp), SCHED_FIFO lcore",
    "nft": "kernel fwd + nft DNAT/SNAT",
    "xdp": "XDP redirect (ceiling)",
    "shunt-l4lb-2q": "Shunt L4LB, 2 queues / 2 workers",
    "shunt-l4lb-1q": "Shunt L4LB, 1 queue / 1 worker",
}


def agg(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"median": round(statistics.median(vals), 3), "min": round(min(vals), 3), "max": round(max(vals), 3), "n": len(vals)}


def fmt(a, digits=2):
    if a is None:
        return "–"
    if a["n"] == 1 or a["min"] == a["max"]:
        return f"{a['median']:.{digits}f}"
    return f"{a['median']:.{digits}f} ({a['min']:.{digits}f}–{a['max']:.{digits}f})"


def report(results, outdir, metapath):
    rows = [json.loads(l) for l in open(results) if l.strip()]
    meta = json.load(open(metapath))
    groups = {}
    for r in rows:
        key = (r["kind"], r["dut"], r.get("size"), r.get("flows"), r.get("queues", 1))
        groups.setdefault(key, []).append(r)
    out = {"meta": meta, "udp": [], "tcp": [], "scaling": [], "raw": rows}
    md = []
    md.append(f"Machine: {meta.get('machine')}; kernel {meta.get('kernel')}; load before/after: {meta.get('load_before')} / {meta.get('load_after')}")
    md.append("")
    md.append(f"Command: `{meta.get('command')}` — rounds: {meta.get('rounds')}, {meta.get('duration')} s measured per case after {meta.get('warmup')} s warm-up")
    if meta.get("rate_pps"):
        md.append("")
        md.append(f"Offered load: {meta['rate_pps']} packets/s (`--rate`), not saturation")
    md.append("")
    md.append("Cells: median over rounds (min–max). Mpps = packets counted by the XDP counter on the sink / measured window.")
    md.append("")
    udp_keys = sorted([k for k in groups if k[0] == "udp"], key=lambda k: (k[2], k[3], list(LABEL).index(k[1]) if k[1] in LABEL else 99))
    hdr = ("| DUT | size B | flows | Mpps at sink | loss % | DUT proc CPU s/s | softirq s/s (all CPUs) | "
           "one-way gen→sink p50 / p99 / p99.9 µs | ping RTT p50 / p99 / p99.9 µs | ping loss % | Shunt RX→TX p50 / p99 / p99.9 µs |")
    md.append(hdr)
    md.append("|" + "---|" * 11)
    for k in udp_keys:
        g = groups[k]
        a = {
            "mpps": agg([r["mpps"] for r in g]),
            "loss_pct": agg([r["loss_pct"] for r in g]),
            "cpu_proc": agg([r.get("cpu_proc_s_per_s") for r in g]),
            "softirq": agg([r.get("softirq_s_per_s") for r in g]),
            "ping_p50": agg([r["ping"].get("p50_us") for r in g]),
            "ping_p99": agg([r["ping"].get("p99_us") for r in g]),
            "ping_p999": agg([r["ping"].get("p999_us") for r in g]),
            "ping_loss": agg([r["ping"].get("loss_pct") for r in g]),
            "hist_p50": agg([(r.get("hist") or {}).get("p50_us") for r in g]),
            "hist_p99": agg([(r.get("hist") or {}).get("p99_us") for r in g]),
            "hist_p999": agg([(r.get("hist") or {}).get("p999_us") for r in g]),
            "lat_p50": agg([(r.get("lat") or {}).get("p50_us") for r in g]),
            "lat_p99": agg([(r.get("lat") or {}).get("p99_us") for r in g]),
            "lat_p999": agg([(r.get("lat") or {}).get("p999_us") for r in g]),
        }
        out["udp"].append({"dut": k[1], "size": k[2], "flows": k[3], **a})
        hist = "–" if a["hist_p50"] is None else f"{fmt(a['hist_p50'],1)} / {fmt(a['hist_p99'],1)} / {fmt(a['hist_p999'],1)}"
        oneway = "–" if a["lat_p50"] is None else f"{fmt(a['lat_p50'],0)} / {fmt(a['lat_p99'],0)} / {fmt(a['lat_p999'],0)}"
        md.append(f"| {LABEL.get(k[1], k[1])} | {k[2]} | {k[3]} | {fmt(a['mpps'],3)} | {fmt(a['loss_pct'],1)} | {fmt(a['cpu_proc'])} | {fmt(a['softirq'])} | "
                  f"{oneway} | {fmt(a['ping_p50'],0)} / {fmt(a['ping_p99'],0)} / {fmt(a['ping_p999'],0)} | {fmt(a['ping_loss'],1)} | {hist} |")
    tcp_keys = sorted([k for k in groups if k[0] == "tcp"])
    if tcp_keys:
        md += ["", "TCP (iperf3, 1 stream, gen → VIP → sink backends):", "", "| DUT | Gbit/s | retransmits | DUT proc CPU s/s | softirq s/s |", "|---|---|---|---|---|"]
        for k in tcp_keys:
            g = groups[k]
            a = {"gbps": agg([r.get("gbps") for r in g]), "retr": agg([r.get("retransmits") for r in g]),
                 "cpu_proc": agg([r.get("cpu_proc_s_per_s") for r in g]), "softirq": agg([r.get("softirq_s_per_s") for r in g])}
            out["tcp"].append({"dut": k[1], **a})
            md.append(f"| {LABEL.get(k[1], k[1])} | {fmt(a['gbps'])} | {fmt(a['retr'],0)} | {fmt(a['cpu_proc'])} | {fmt(a['softirq'])} |")
    sc_keys = sorted([k for k in groups if k[0] == "scaling"], key=lambda k: k[4])
    if sc_keys:
        md += ["", "Queue scaling (Shunt L4LB, same generator settings except its queue count):", "",
               "| queues / workers | size B | flows | Mpps at sink | loss % | DUT proc CPU s/s |", "|---|---|---|---|---|---|"]
        for k in sc_keys:
            g = groups[k]
            a = {"mpps": agg([r["mpps"] for r in g]), "loss_pct": agg([r["loss_pct"] for r in g]), "cpu_proc": agg([r.get("cpu_proc_s_per_s") for r in g])}
            out["scaling"].append({"queues": k[4], "size": k[2], "flows": k[3], **a})
            md.append(f"| {k[4]} | {k[2]} | {k[3]} | {fmt(a['mpps'],3)} | {fmt(a['loss_pct'],1)} | {fmt(a['cpu_proc'])} |")
    # Ratios against the targets (medians, per size/flows).
    def med(dut, size, flows):
        g = groups.get(("udp", dut, size, flows, 1))
        return statistics.median([r["mpps"] for r in g]) if g else None
    def medl(dut, size, flows, field):
        g = groups.get(("udp", dut, size, flows, 1))
        v = [(r.get("lat") or {}).get(field) for r in g] if g else []
        v = [x for x in v if x is not None]
        return statistics.median(v) if v else None
    def medp(dut, size, flows, field):
        g = groups.get(("udp", dut, size, flows, 1))
        v = [r["ping"].get(field) for r in g] if g else []
        v = [x for x in v if x is not None]
        return statistics.median(v) if v else None
    rows = []
    ratios = []
    f = lambda x: "–" if x is None else f"{x:.2f}"
    sf = sorted({(k[2], k[3]) for k in udp_keys})
    def rat(a, b):
        return None if a is None or b in (None, 0) else round(a / b, 2)
    for size, flows in sf:
        r = {"size": size, "flows": flows,
             "l4lb_vs_testpmd": rat(med("shunt-l4lb", size, flows), med("testpmd", size, flows)),
             "l4lb_vs_nft": rat(med("shunt-l4lb", size, flows), med("nft", size, flows)),
             "l2fwd_vs_xdp": rat(med("shunt-l2fwd", size, flows), med("xdp", size, flows)),
             "p99_l4lb_vs_testpmd": rat(medp("shunt-l4lb", size, flows, "p99_us"), medp("testpmd", size, flows, "p99_us")),
             "p99_l2fwd_vs_testpmd": rat(medp("shunt-l2fwd", size, flows, "p99_us"), medp("testpmd", size, flows, "p99_us")),
             "oneway_p99_l4lb_vs_testpmd": rat(medl("shunt-l4lb", size, flows, "p99_us"), medl("testpmd", size, flows, "p99_us"))}
        ratios.append(r)
        rows.append(f"| {size} | {flows} | {f(r['l4lb_vs_testpmd'])} | {f(r['l4lb_vs_nft'])} | {f(r['l2fwd_vs_xdp'])} | {f(r['p99_l4lb_vs_testpmd'])} | {f(r['p99_l2fwd_vs_testpmd'])} | {f(r['oneway_p99_l4lb_vs_testpmd'])} |")
    out["ratios"] = ratios
    # Only where the run had the DUTs to compare (not, e.g., an -rt-only run).
    if any(v is not None for r in ratios for k, v in r.items() if k not in ("size", "flows")):
        md += ["", "Ratios against the targets (medians):", "",
               "| size B | flows | L4LB / testpmd mac (≥ 1.2) | L4LB / nft DNAT (≥ 1.0) | l2fwd / XDP fwd (≥ 0.70) | ping p99 Shunt L4LB / testpmd (≤ 1.0) | ping p99 Shunt l2fwd / testpmd | one-way p99 L4LB / testpmd (≤ 1.0) |",
               "|---|---|---|---|---|---|---|---|"] + rows
    # Like for like with real-time scheduling, where both were run.
    if any(k[1] == "testpmd-rt" for k in udp_keys):
        md += ["", "SCHED_FIFO on both sides (medians):", "",
               "| size B | flows | L4LB-rt / testpmd-rt (≥ 1.2) | l2fwd-rt / testpmd-rt | ping p99 L4LB-rt / testpmd-rt (≤ 1.0) | one-way p99 L4LB-rt / testpmd-rt (≤ 1.0) |",
               "|---|---|---|---|---|---|"]
        rt = []
        for size, flows in sf:
            r = {"size": size, "flows": flows,
                 "l4lb_rt_vs_testpmd_rt": rat(med("shunt-l4lb-rt", size, flows), med("testpmd-rt", size, flows)),
                 "l2fwd_rt_vs_testpmd_rt": rat(med("shunt-l2fwd-rt", size, flows), med("testpmd-rt", size, flows)),
                 "p99_l4lb_rt_vs_testpmd_rt": rat(medp("shunt-l4lb-rt", size, flows, "p99_us"),
                                                  medp("testpmd-rt", size, flows, "p99_us")),
                 "oneway_p99_l4lb_rt_vs_testpmd_rt": rat(medl("shunt-l4lb-rt", size, flows, "p99_us"),
                                                         medl("testpmd-rt", size, flows, "p99_us"))}
            rt.append(r)
            md.append(f"| {size} | {flows} | {f(r['l4lb_rt_vs_testpmd_rt'])} | {f(r['l2fwd_rt_vs_testpmd_rt'])} | "
                      f"{f(r['p99_l4lb_rt_vs_testpmd_rt'])} | {f(r['oneway_p99_l4lb_rt_vs_testpmd_rt'])} |")
        out["ratios_rt"] = rt
    text = "\n".join(md) + "\n"
    open(f"{outdir}/compare.md", "w").write(text)
    json.dump(out, open(f"{outdir}/compare.json", "w"), indent=1)
    print(text)


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "cnt":
        cnt()
    elif cmd == "ping":
        ping(sys.argv[2])
    elif cmd == "testpmd":
        testpmd(sys.argv[2])
    elif cmd == "shuntgen":
        shuntgen(sys.argv[2:])
    elif cmd == "lat":
        lat(sys.argv[2], sys.argv[3])
    elif cmd == "hist":
        hist(sys.argv[2])
    elif cmd == "report":
        report(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        print(__doc__)
        sys.exit(2)
