#!/usr/bin/env python3
"""The sluice admin CLI as a script sees it (INTERFACE.md, "sluice (admin CLI)").

Runs the built binary named by $SLUICE_CLI against fresh data directories:
scriptable stdout (only the id / the token), one "sluice: " line on stderr for
every error, exit 0 ok / 1 failure / 2 bad usage, tokens never listed.
Exits 77 (meson: skipped) when $SLUICE_CLI is not set.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

CLI = os.environ.get("SLUICE_CLI")
TOKEN_RE = re.compile(r"^slk_[0-9a-f]{40}\n$")


class CliTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sluice-cli-")
        self.data = os.path.join(self.tmp, "data")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_cli(self, *args, data=True, env=None):
        argv = [CLI] + (["--data-dir", self.data] if data else []) + list(args)
        e = dict(os.environ)
        e.pop("SLUICE_DATA_DIR", None)
        if env:
            e.update(env)
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=e,
                           cwd=self.tmp)
        return p.returncode, p.stdout, p.stderr

    def assert_one_error_line(self, err):
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, "want exactly one stderr line, got %r" % err)
        self.assertTrue(lines[0].startswith("sluice: "), lines[0])

    def assert_fails(self, code, *args, **kw):
        rc, out, err = self.run_cli(*args, **kw)
        self.assertEqual(rc, code, "sluice %s: exit %d, stderr %r" % (" ".join(args), rc, err))
        self.assertEqual(out, "", "errors print nothing on stdout")
        self.assert_one_error_line(err)
        return err

    def add_org(self, name):
        rc, out, err = self.run_cli("org", "add", name)
        self.assertEqual(rc, 0, err)
        return out

    def add_device(self, org, name):
        rc, out, err = self.run_cli("device", "add", "--org", org, name)
        self.assertEqual(rc, 0, err)
        return out

    # -- org add

    def test_org_add_prints_only_the_id(self):
        self.assertEqual(self.add_org("acme"), "1\n")
        rc, out, err = self.run_cli("org", "add", "beta")
        self.assertEqual((rc, out, err), (0, "2\n", ""))
        self.assertEqual(os.stat(self.data).st_mode & 0o777, 0o700, "data dir is private")

    def test_org_add_duplicate_exits_1_with_one_line(self):
        self.add_org("acme")
        err = self.assert_fails(1, "org", "add", "acme")
        self.assertIn("already exists", err)

    def test_org_add_invalid_names_are_bad_usage(self):
        for name in ["123", "-acme", "a/b", "x" * 65, "a\nb", ""]:
            self.assert_fails(2, "org", "add", name)
        self.assertEqual(self.add_org("x" * 64), "1\n")

    def test_org_list_shows_id_name_created(self):
        self.add_org("acme")
        self.add_org("beta")
        rc, out, err = self.run_cli("org", "list")
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["ID", "NAME", "CREATED"])
        self.assertEqual(len(lines), 3)
        self.assertRegex(lines[1], r"^1\s+acme\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertRegex(lines[2], r"^2\s+beta\s+")

    # -- bad usage

    def test_bad_usage_exits_2(self):
        cases = [
            ("org", "add"),
            ("org", "add", "a", "b"),
            ("org",),
            ("device", "add", "pump"),
            ("device", "add", "--org"),
            ("device", "add", "--org", "a", "--org", "b", "x"),
            ("device", "list"),
            ("org", "list", "--colour"),
            ("frobnicate",),
            ("--bogus", "org", "list"),
            (),
        ]
        for args in cases:
            with self.subTest(args=args):
                self.assert_fails(2, *args)

    def test_unimplemented_commands_say_so_and_exit_2(self):
        for args in [("token", "rotate", "--org", "a", "d"), ("token", "revoke", "--org", "a", "d"),
                     ("user", "add", "--org", "a", "--role", "reader", "u"),
                     ("org", "set", "a"), ("audit",), ("usage", "--org", "a")]:
            with self.subTest(args=args):
                err = self.assert_fails(2, *args)
                self.assertIn("not implemented yet", err)
        err = self.assert_fails(2, "token", "rotate")
        self.assertIn("'token rotate'", err)

    def test_help_and_version_exit_0_on_stdout(self):
        rc, out, err = self.run_cli("--help", data=False)
        self.assertEqual(rc, 0)
        self.assertIn("usage: sluice", out)
        self.assertIn("device add --org ORG NAME", out)
        rc, out, err = self.run_cli("--version", data=False)
        self.assertEqual(rc, 0)
        self.assertRegex(out, r"^sluice \d+\.\d+\.\d+\n$")

    # -- device add / list

    def test_device_add_prints_only_a_token(self):
        self.add_org("acme")
        rc, out, err = self.run_cli("device", "add", "--org", "acme", "pump-7")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, TOKEN_RE)
        self.assertEqual(len(err.splitlines()), 1, "one hint line on stderr")
        self.assertIn("once", err)
        self.assertNotIn(out.strip(), err, "the token goes to stdout only")

    def test_device_add_accepts_org_id_and_option_after_name(self):
        self.add_org("acme")
        self.assertRegex(self.add_device("1", "a"), TOKEN_RE)
        rc, out, err = self.run_cli("device", "add", "b", "--org=acme")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, TOKEN_RE)

    def test_two_tokens_differ(self):
        self.add_org("acme")
        self.assertNotEqual(self.add_device("acme", "a"), self.add_device("acme", "b"))

    def test_device_add_failures(self):
        self.add_org("acme")
        self.add_device("acme", "pump")
        self.assertIn("already exists", self.assert_fails(1, "device", "add", "--org", "acme", "pump"))
        self.assertIn("no such org", self.assert_fails(1, "device", "add", "--org", "nope", "x"))
        self.assertIn("no such org", self.assert_fails(1, "device", "add", "--org", "9", "x"))
        self.assert_fails(2, "device", "add", "--org", "acme", "bad/name")

    def test_device_list_never_shows_tokens(self):
        self.add_org("acme")
        tokens = [self.add_device("acme", n).strip() for n in ("pump-7", "valve", "42")]
        for org in ("acme", "1"):
            rc, out, err = self.run_cli("device", "list", "--org", org)
            self.assertEqual(rc, 0, err)
            lines = out.splitlines()
            self.assertEqual(lines[0].split(), ["ID", "NAME", "STATE", "CREATED"])
            self.assertEqual([l.split()[:3] for l in lines[1:]],
                             [["1", "pump-7", "active"], ["2", "valve", "active"],
                              ["3", "42", "active"]])
            for t in tokens:
                self.assertNotIn(t[4:14], out + err)
            self.assertNotIn("slk_", out + err)

    def test_device_list_is_per_org(self):
        self.add_org("a")
        self.add_org("b")
        self.add_device("a", "only-in-a")
        rc, out, err = self.run_cli("device", "list", "--org", "b")
        self.assertEqual(rc, 0, err)
        self.assertNotIn("only-in-a", out)
        self.assertIn("no such org", self.assert_fails(1, "device", "list", "--org", "c"))

    def test_concurrent_device_adds_all_succeed(self):
        # Separate processes writing one LMDB environment: LMDB's writer lock
        # serialises them, as it does the CLI against a running sluiced.
        self.add_org("acme")
        procs = [subprocess.Popen([CLI, "--data-dir", self.data, "device", "add", "--org", "acme",
                                   "d%d" % i], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for i in range(8)]
        outs = [p.communicate(timeout=60) for p in procs]
        for p, (out, err) in zip(procs, outs):
            self.assertEqual(p.returncode, 0, err)
            self.assertRegex(out, TOKEN_RE)
        self.assertEqual(len({o for o, _ in outs}), 8)
        rc, out, err = self.run_cli("device", "list", "--org", "acme")
        self.assertEqual(len(out.splitlines()), 9)

    # -- data directory

    def test_missing_data_dir_exits_1_and_creates_nothing(self):
        for args in [("org", "list"), ("device", "list", "--org", "acme"),
                     ("device", "add", "--org", "acme", "x")]:
            with self.subTest(args=args):
                err = self.assert_fails(1, *args)
                self.assertIn("no data directory at " + self.data, err)
                self.assertFalse(os.path.exists(self.data))

    def test_default_data_dir_and_env_override(self):
        rc, out, err = self.run_cli("org", "add", "acme", data=False)
        self.assertEqual((rc, out), (0, "1\n"), err)
        self.assertTrue(os.path.exists(os.path.join(self.tmp, "data", "sluice.mdb")),
                        "default is ./data")
        other = os.path.join(self.tmp, "elsewhere")
        rc, out, err = self.run_cli("org", "add", "beta", data=False,
                                    env={"SLUICE_DATA_DIR": other})
        self.assertEqual((rc, out), (0, "1\n"), err)
        self.assertTrue(os.path.exists(os.path.join(other, "sluice.mdb")))
        # --data-dir beats the environment
        rc, out, err = self.run_cli("org", "list", env={"SLUICE_DATA_DIR": other})
        self.assertIn("acme", out)
        self.assertNotIn("beta", out)


if __name__ == "__main__":
    if not CLI:
        print("SLUICE_CLI not set: the sluice CLI was not built; skipping")
        sys.exit(77)
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
