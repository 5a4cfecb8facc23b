#!/usr/bin/env python3
"""Runs `cargo test ARGS --no-fail-fast`, then runs each failed namespace-lab
test (a `tests/lab_*.rs` binary) once more, alone. A lab test that passes
then is reported as FLAKY and does not fail the run; any other failure does:
a unit, property or CLI test, a lab test that fails twice, a build error, or
a test binary that died without naming a test. See docs/DECISIONS.md.

usage: cargo-test-retry.py CARGO_TEST_ARGS...   (e.g. --release --workspace -- --test-threads=2)
"""

import re
import subprocess
import sys

RUNNING = re.compile(r"^\s+Running (.+) \((\S+)\)$")
DOC_TESTS = re.compile(r"^\s+Doc-tests (\S+)$")
FAILED = re.compile(r"^test (.+) \.\.\. FAILED$")
RESULT = re.compile(r"^test result: \w+\. \d+ passed; (\d+) failed;")


def main(args):
    if "--" in args:
        split = args.index("--")
        cargo_args, test_args = args[:split], args[split:]
    else:
        cargo_args, test_args = args, []
    cmd = ["cargo", "test", *cargo_args, "--no-fail-fast", *test_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    failed = []  # (source, binary, test)
    counted = 0  # failures the "test result" lines report
    source = binary = None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        line = line.rstrip("\n")
        if m := RUNNING.match(line):
            source, binary = m.groups()
        elif m := DOC_TESTS.match(line):
            source, binary = f"doc-tests of {m.group(1)}", None
        elif m := FAILED.match(line):
            failed.append((source or "?", binary, m.group(1)))
        elif m := RESULT.match(line):
            counted += int(m.group(1))
    rc = proc.wait()
    if rc == 0:
        return 0
    if not failed or len(failed) != counted:
        print(
            f"cargo-test-retry: cargo test exited {rc}; {len(failed)} failed tests named, {counted} counted",
            file=sys.stderr,
        )
        return rc
    not_lab = [f"{s}: {t}" for s, b, t in failed if not (s.startswith("tests/lab_") and b)]
    if not_lab:
        print(f"cargo-test-retry: failed (never rerun, not a lab test): {not_lab}", file=sys.stderr)
        return rc
    flaky, broken = [], []
    for source, binary, test in failed:
        print(f"\ncargo-test-retry: {source}: {test} failed; running it once more, alone", flush=True)
        again = subprocess.run(
            [binary, "--exact", test, "--test-threads=1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        sys.stdout.write(again.stdout)
        # It must have run, and passed: exactly this one test.
        passed = again.returncode == 0 and "test result: ok. 1 passed; 0 failed" in again.stdout
        (flaky if passed else broken).append(f"{source}: {test}")
    for t in flaky:
        print(f"FLAKY (failed, then passed alone): {t}", flush=True)
    if broken:
        print(f"cargo-test-retry: failed twice: {broken}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
