#!/usr/bin/env python3
"""Tests of compare-trees.py's parsing and report, with fake bench binaries.

The real script builds trees with cargo; these tests give `timed` small
executables that print what criterion prints (and one that panics part
way, as a bench once did), so what is checked is the report: medians,
ratios, every sample, and a failed run named with its stderr.

  python3 scripts/bench/test_compare_trees.py
"""
import contextlib
import importlib.util
import io
import os
import shutil
import stat
import tempfile
import types
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("compare_trees", os.path.join(HERE, "compare-trees.py"))
ct = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ct)

# Criterion's output for two rows: one name short enough to share its line
# with the estimate, one on a line of its own; "change:" lines in between.
CRITERION = """\
Benchmarking l4lb_v4/established/1k: Warming up for 1.0000 s
l4lb_v4/established/1k  time:   [2.6000 µs {dnat} µs 2.7000 µs]
                        thrpt:  [23.704 Melem/s 24.000 Melem/s 24.615 Melem/s]
                 change:
                        time:   [-1.0000% +0.5000% +2.0000%] (p = 0.40 > 0.05)
l4lb_nat46/established/1k_4to6
                        time:   [2900.0 ns {xlat} ns 3000.0 ns]
"""


def fake_bench(directory, name, dnat_us, xlat_ns, fail=False):
    """An executable that prints CRITERION with the given middle estimates;
    with `fail`, it stops after the first row, as a panicking bench does."""
    out = CRITERION.format(dnat=dnat_us, xlat=xlat_ns)
    if fail:
        out = out.split("l4lb_nat46")[0]
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\ncat <<'EOF'\n" + out + "EOF\n")
        if fail:
            f.write("echo \"thread 'main' panicked at benches/pipeline.rs:9:9: setup batch\" >&2\nexit 101\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


class ParseTimes(unittest.TestCase):
    def test_middle_estimate_per_packet_in_ns_skipping_change_lines(self):
        got = ct.parse_times(CRITERION.format(dnat="2.5600", xlat="3200.0"))
        self.assertEqual(set(got), {"l4lb_v4/established/1k", "l4lb_nat46/established/1k_4to6"})
        self.assertAlmostEqual(got["l4lb_v4/established/1k"], 2560.0 / ct.BATCH)
        self.assertAlmostEqual(got["l4lb_nat46/established/1k_4to6"], 3200.0 / ct.BATCH)

    def test_nothing_from_output_without_estimates(self):
        self.assertEqual(ct.parse_times("Benchmarking x/y: Warming up\n"), {})


@unittest.skipIf(shutil.which("taskset") is None, "taskset not found")
class Timed(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="compare-trees-test-")
        self.args = types.SimpleNamespace(rounds=3, cpu=0, rows=".", measurement_time=1)

    def tearDown(self):
        shutil.rmtree(self.dir)

    def report(self, bins):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            failed = ct.timed(self.args, self.dir, bins)
        return failed, out.getvalue()

    def test_medians_ratios_and_every_sample(self):
        base = fake_bench(self.dir, "base", "3.2000", "4160.0")
        new = fake_bench(self.dir, "new", "2.5600", "2816.0")
        failed, text = self.report([("old", [base]), ("new", [new])])
        self.assertEqual(failed, 0)
        self.assertIn("| `l4lb_v4/established/1k` | 50.0 | 40.0 | 0.80 |", text)
        self.assertIn("| `l4lb_nat46/established/1k_4to6` | 65.0 | 44.0 | 0.68 |", text)
        self.assertIn("* `l4lb_v4/established/1k` new: 40.0/40.0/40.0", text)
        self.assertNotIn("failed", text)

    def test_a_failed_run_keeps_the_rest_and_is_named_with_its_stderr(self):
        base = fake_bench(self.dir, "base", "3.2000", "4160.0")
        good = fake_bench(self.dir, "new-p1", "2.5600", "2816.0")
        bad = fake_bench(self.dir, "new-p2", "2.5600", "2816.0", fail=True)
        failed, text = self.report([("old", [base]), ("new", [good, bad])])
        self.assertEqual(failed, 3, "one failed run a round")
        # The failing placement's finished row still counts: six samples.
        self.assertIn("* `l4lb_v4/established/1k` new: " + "/".join(["40.0"] * 6), text)
        self.assertIn("* `l4lb_nat46/established/1k_4to6` new: 44.0/44.0/44.0\n", text)
        self.assertIn("3 run(s) failed", text)
        self.assertIn("round 2, new, placement 2/2: exit status 101", text)
        self.assertIn("panicked at benches/pipeline.rs:9:9", text)


if __name__ == "__main__":
    unittest.main()
