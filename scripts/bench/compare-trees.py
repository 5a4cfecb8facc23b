#!/usr/bin/env python3
"""Times the pipeline benchmark of two or more trees side by side.

Builds `cargo bench --bench pipeline` for each git revision given (each in
a worktree and target directory of its own under target/compare-trees/;
`.` is the working tree as it is), then runs the binaries in turn, round
after round, pinned to one CPU, and prints the median of each row in
ns/packet with its ratio to the first tree. Interleaving the trees in
every round is what makes the ratio mean something on a shared machine:
load that comes and goes hits each tree alike.

  scripts/bench/compare-trees.py 91482dd .                 # the issue table's rows, 5 rounds
  scripts/bench/compare-trees.py --rounds 7 --rows 'l4lb_v4/established/1k$' 91482dd HEAD
  scripts/bench/compare-trees.py --instructions 91482dd .  # callgrind instructions a packet
  scripts/bench/compare-trees.py --placements 4 --rounds 3 91482dd .

Code placement alone moves a row by several percent: the same commit
built in two directories (source paths of other lengths in `.rodata`,
which comes before `.text`) has run 5 % apart. `--placements N` builds
each tree N times, its code shifted by a multiple of PAD_STEP bytes (a
padding object linked into the bench binary only: one relink a
placement), runs every placement in every round, and takes each tree's
median over all of them.

Stdlib only. Needs git, cargo, taskset, cc; --instructions needs valgrind.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys

ISSUE_ROWS = (
    r"^(baseline/l2fwd|l4lb_v4/established/(1k|1k_workers2|100k|1M)|l4lb_v4/new_flow/1k"
    r"|l4lb_v6/established/1k|l4lb_nat46/established/1k_(4to6|6to4))$"
)
INSTRUCTION_ROWS = [
    "l4lb_v4/established/1k",
    "l4lb_v4/new_flow/1k",
    "l4lb_nat46/established/1k_4to6",
    "l4lb_nat46/established/1k_6to4",
]
# Bytes a placement shifts the code by: `.text` starts 16-byte aligned, and
# 208 = 13 x 16 moves it to another place in a 64-byte line and in a page
# at each step.
PAD_STEP = 208
# Packets a timed iteration carries (the benches' BATCH): criterion's time
# is per iteration.
BATCH = 64
UNIT_NS = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, **kw)


def repo_root():
    return run(["git", "rev-parse", "--show-toplevel"], capture_output=True).stdout.strip()


def pad_object(work, size):
    """An object file of `size` bytes of read-only data, kept by the linker's
    section garbage collection (SHF_GNU_RETAIN)."""
    obj = os.path.join(work, f"pad-{size}.o")
    if not os.path.exists(obj):
        src = f'.section .rodata.compare_trees_pad,"aR",@progbits\n.zero {size}\n'
        run(["cc", "-c", "-x", "assembler", "-", "-o", obj], input=src)
    return obj


def build(root, work, rev, placements=1):
    """Builds the pipeline bench of `rev` ('.' = the working tree); returns
    (label, [paths of copies of the binary, one a placement])."""
    if rev == ".":
        label = run(["git", "describe", "--always", "--dirty"], capture_output=True, cwd=root).stdout.strip()
        tree, env = root, dict(os.environ)
    else:
        sha = run(["git", "rev-parse", "--short", rev + "^{commit}"], capture_output=True, cwd=root).stdout.strip()
        label, tree = sha, os.path.join(work, "tree-" + sha)
        if not os.path.isdir(tree):
            run(["git", "worktree", "add", "--detach", tree, sha], cwd=root, stdout=subprocess.DEVNULL)
        # A tree from before the workspace is one package with no
        # [workspace] table: cargo would take the checkout's manifest,
        # above it, for its workspace and refuse to build it. Checked on
        # every run, so a worktree left by an older run is mended too.
        manifest = os.path.join(tree, "Cargo.toml")
        with open(manifest) as f:
            own = any(line.strip() == "[workspace]" for line in f)
        if not own:
            with open(manifest, "a") as f:
                f.write("\n[workspace]\n")
        env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(work, "target-" + sha))
    print(f"compare-trees: building {label} ...", file=sys.stderr, flush=True)
    out = subprocess.run(
        ["cargo", "bench", "--bench", "pipeline", "--no-run"], cwd=tree, env=env, text=True, capture_output=True
    )
    if out.returncode != 0:
        sys.exit(f"compare-trees: building {label} failed:\n{out.stderr[-4000:]}")
    found = re.findall(r"Executable benches/pipeline\.rs \((.*)\)", out.stderr)
    if not found:
        sys.exit(f"compare-trees: no bench binary in cargo's output for {label}")
    exe = found[-1] if os.path.isabs(found[-1]) else os.path.join(tree, found[-1])
    copy = os.path.join(work, "bench-" + label)
    shutil.copy2(exe, copy)
    copies = [copy]
    for k in range(1, placements):
        pad = pad_object(work, k * PAD_STEP)
        print(f"compare-trees: relinking {label} with its code {k * PAD_STEP} bytes later ...",
              file=sys.stderr, flush=True)
        out = subprocess.run(
            ["cargo", "rustc", "--bench", "pipeline", "--profile", "bench", "--message-format=json",
             "--", "-C", "link-arg=" + pad],
            cwd=tree, env=env, text=True, capture_output=True,
        )
        if out.returncode != 0:
            sys.exit(f"compare-trees: relinking {label} failed:\n{out.stderr[-4000:]}")
        exe = None
        for line in out.stdout.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "pipeline":
                exe = msg.get("executable") or exe
        if exe is None:
            sys.exit(f"compare-trees: no bench binary in cargo's output for {label}, placement {k + 1}")
        copy = os.path.join(work, f"bench-{label}-p{k}")
        shutil.copy2(exe, copy)
        copies.append(copy)
    return label, copies


def parse_times(text):
    """{row: ns/packet} from criterion's output (the middle estimate)."""
    times, row = {}, None
    for line in text.splitlines():
        m = re.match(r"^(\S+/\S+)", line)
        if m and not line.startswith(" "):
            row = m.group(1)
        if "%" in line:  # criterion's "change:" lines
            continue
        m = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+)", line)
        if m and row:
            times[row] = float(m.group(1)) * UNIT_NS[m.group(2)] / BATCH
    return times


def timed(args, work, bins):
    rows_seen, samples, failed = [], {}, []
    for r in range(1, args.rounds + 1):
        for label, exes in bins:
            for k, exe in enumerate(exes):
                at = f", placement {k + 1}/{len(exes)}" if len(exes) > 1 else ""
                print(f"compare-trees: round {r}/{args.rounds}, {label}{at}", file=sys.stderr, flush=True)
                env = dict(os.environ, CRITERION_HOME=os.path.join(work, "criterion-" + label))
                cmd = ["taskset", "-c", str(args.cpu), exe, "--bench", args.rows,
                       "--measurement-time", str(args.measurement_time), "--warm-up-time", "1", "--noplot"]
                # A run that fails (a panic in a bench's setup, say) costs
                # its own samples, not the whole comparison: the rows it
                # finished count, and the report names it with its stderr.
                done = subprocess.run(cmd, env=env, text=True, capture_output=True)
                if done.returncode != 0:
                    tail = "\n".join(done.stderr.strip().splitlines()[-12:])
                    failed.append((f"round {r}, {label}{at}: exit status {done.returncode}", tail))
                    print(f"compare-trees: that run failed (exit status {done.returncode}):\n{tail}",
                          file=sys.stderr, flush=True)
                for row, ns in parse_times(done.stdout).items():
                    if row not in rows_seen:
                        rows_seen.append(row)
                    samples.setdefault(row, {}).setdefault(label, []).append(ns)
    labels = [label for label, _ in bins]
    base = labels[0]
    head = ["bench"] + labels + [f"{x} ÷ {base}" for x in labels[1:]]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" + "---:|" * (len(head) - 1))
    for row in rows_seen:
        med = {x: statistics.median(samples[row][x]) for x in labels if x in samples[row]}
        cells = [f"{med[x]:.1f}" if x in med else "–" for x in labels]
        ratios = [f"{med[x] / med[base]:.2f}" if x in med and base in med else "–" for x in labels[1:]]
        print(f"| `{row}` | " + " | ".join(cells + ratios) + " |")
    print()
    for row in rows_seen:
        for x in labels:
            got = samples[row].get(x, [])
            print(f"* `{row}` {x}: " + "/".join(f"{v:.1f}" for v in got))
    if failed:
        print(f"\n{len(failed)} run(s) failed; the rows each finished are counted above:")
        for what, tail in failed:
            print(f"\n* {what}\n\n```\n{tail}\n```")
    return len(failed)


def instructions(work, bins, rows):
    """Instructions a packet in `Pipeline::run`, inside criterion's timed loop."""
    print("| bench | " + " | ".join(label for label, _ in bins) + " |")
    print("|---|" + "---:|" * len(bins))
    for row in rows:
        cells = []
        for label, (exe, *_) in bins:
            out = os.path.join(work, f"callgrind-{label}-{row.replace('/', '_')}.out")
            if "new_flow" in row:  # timed by iter_custom, between table resets
                toggles = ["--toggle-collect=*Bencher*iter_custom*", "--toggle-collect=*NewFlows*reset*"]
            else:
                toggles = ["--toggle-collect=criterion::bencher::Bencher<M>::iter*"]
            print(f"compare-trees: callgrind {label} {row}", file=sys.stderr, flush=True)
            run(["valgrind", "--tool=callgrind", *toggles, f"--callgrind-out-file={out}", exe,
                 "--bench", row + "$", "--profile-time", "2"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cells.append(per_packet(out))
        print(f"| `{row}` | " + " | ".join(cells) + " |")


def per_packet(out):
    """`Pipeline::run`'s inclusive count ÷ (its calls from the bench loop × BATCH)."""
    text = run(["callgrind_annotate", "--inclusive=yes", "--tree=caller", out], capture_output=True).stdout
    lines = text.splitlines()
    star = re.compile(r"^\s*[\d,]+ \([\d. %]+\)\s+\*\s+(.*)$")
    for i, line in enumerate(lines):
        m = star.match(line)
        if not m or not m.group(1).split(" [")[0].endswith("Pipeline::run"):
            continue
        total = calls = 0
        j = i - 1
        while j >= 0 and lines[j].strip():
            c = re.search(r"\(([\d,]+)x\)", lines[j])
            if c and "Bencher" in lines[j]:
                calls += int(c.group(1).replace(",", ""))
                total += int(lines[j].split()[0].replace(",", ""))
            j -= 1
        if calls:
            return f"{total / calls / BATCH:.1f}"
    return "–"


def host():
    try:
        info = run(["lscpu"], capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown host"
    fields = dict(re.findall(r"^([^:]+):\s+(.*)$", info, re.M))
    return (f"{fields.get('Model name', '?')}, family {fields.get('CPU family', '?')}, "
            f"model {fields.get('Model', '?')}, {fields.get('CPU(s)', '?')} CPUs")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("revs", nargs="+", metavar="REV", help="git revisions; '.' is the working tree; the first is the base")
    p.add_argument("--rounds", type=int, default=5, help="rounds of every tree (default 5)")
    p.add_argument("--rows", default=ISSUE_ROWS, help="criterion filter (default: the redesign issue's rows)")
    p.add_argument("--measurement-time", type=int, default=3, help="criterion seconds a row (default 3)")
    p.add_argument("--cpu", type=int, default=1, help="CPU to pin to (default 1)")
    p.add_argument("--placements", type=int, default=1,
                   help=f"code placements of each tree, {PAD_STEP} bytes apart (default 1: as built)")
    p.add_argument("--instructions", action="store_true",
                   help="count instructions a packet with callgrind instead of timing (rows: "
                   + ", ".join(INSTRUCTION_ROWS) + ")")
    args = p.parse_args()
    if len(args.revs) < 2 and not args.instructions:
        p.error("give at least two trees to compare, e.g. 91482dd .")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.placements < 1:
        p.error("--placements must be at least 1")
    tools = ["git", "cargo", "taskset"] + (["cc"] if args.placements > 1 else [])
    for tool in tools + (["valgrind", "callgrind_annotate"] if args.instructions else []):
        if shutil.which(tool) is None:
            sys.exit(f"compare-trees: {tool} not found (valgrind: apt-get install valgrind)")
    root = repo_root()
    # Worktrees of an earlier run whose directories `cargo clean` removed.
    run(["git", "worktree", "prune"], cwd=root)
    work = os.path.join(root, "target", "compare-trees")
    os.makedirs(work, exist_ok=True)
    bins = []
    placements = 1 if args.instructions else args.placements
    for rev in args.revs:
        label, exes = build(root, work, rev, placements)
        if any(label == seen for seen, _ in bins):
            sys.exit(f"compare-trees: {rev} is {label}, given twice")
        bins.append((label, exes))
    shifts = f", {placements} code placements {PAD_STEP} bytes apart" if placements > 1 else ""
    print(f"Host: {host()}{shifts}.\n")
    if args.instructions:
        instructions(work, bins, INSTRUCTION_ROWS)
    elif timed(args, work, bins):
        sys.exit(1)


if __name__ == "__main__":
    main()
