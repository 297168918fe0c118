"""Configuration: --check-config, exit code 78 with the key named, the
original .env syntax, environment over file, unknown keys."""

import os
import re
import subprocess
import socket

import arnietest
from arnietest import ArnieTestCase, make_message, smtp_send, write_env

EX_CONFIG = 78
PASSWORD = "Sup3r-Secret-pw#not-in-output"


class ConfigTest(ArnieTestCase):

    def env_file(self, text, name="test.env"):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def check(self, path=None, extra_env=None):
        args = ["--check-config"]
        if path:
            args += ["-c", path]
        return self.run_arnie(args, extra_env=extra_env)

    @staticmethod
    def values(stdout):
        out = {}
        for line in stdout.splitlines():
            k, sep, v = line.partition("=")
            if sep:
                v = v.strip()
                # Values with blanks are printed quoted, re-readable as .env.
                if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
                    v = v[1:-1]
                out[k.strip()] = v
        return out

    def test_readable_password_files_get_one_warning(self):
        pw = os.path.join(self.tmp, "password")
        with open(pw, "w") as f:
            f.write(PASSWORD + "\n")
        for pw_mode, env_mode, key, warned in (
                (0o644, 0o600, "OUTBOUND_EMAIL_PASSWORD_FILE", pw),
                (0o640, 0o644, "OUTBOUND_EMAIL_PASSWORD", None),
                (0o600, 0o640, "OUTBOUND_EMAIL_PASSWORD", None)):
            keys = dict(OUTBOUND_EMAIL_HOST="smtp.example.com",
                        OUTBOUND_EMAIL_USERNAME="AKIAEXAMPLE")
            keys[key] = pw if key.endswith("_FILE") else PASSWORD
            path = write_env(self.tmp, **keys)
            os.chmod(pw, pw_mode)
            os.chmod(path, env_mode)
            r = self.check(path)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertNotIn(PASSWORD, r.stdout + r.stderr)
            lines = [l for l in r.stderr.splitlines()
                     if "every user can read it" in l]
            if env_mode & 0o004 and key == "OUTBOUND_EMAIL_PASSWORD":
                warned = path
            if warned is None:
                self.assertEqual(lines, [], r.stderr)
            else:
                self.assertEqual(len(lines), 1, r.stderr)
                self.assertIn("%s " % warned, lines[0])
                self.assertIn("(mode %04o): chmod o-r %s" % (
                    pw_mode if warned == pw else env_mode, warned),
                    lines[0])

    def test_check_config_prints_effective_config_with_password_masked(self):
        path = write_env(self.tmp, OUTBOUND_EMAIL_HOST="smtp.example.com",
                         OUTBOUND_EMAIL_USERNAME="AKIAEXAMPLE",
                         OUTBOUND_EMAIL_PASSWORD=PASSWORD)
        r = self.check(path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn(PASSWORD, r.stdout + r.stderr)
        v = self.values(r.stdout)
        self.assertEqual(v["OUTBOUND_EMAIL_HOST"], "smtp.example.com")
        self.assertEqual(v["OUTBOUND_EMAIL_USERNAME"], "AKIAEXAMPLE")
        self.assertIn("OUTBOUND_EMAIL_PASSWORD", v)
        self.assertRegex(v["OUTBOUND_EMAIL_PASSWORD"], r"^\*+$")
        # The defaults of the issue.
        defaults = {
            "OUTBOUND_EMAIL_HOST_PORT": "587",
            "OUTBOUND_EMAIL_TLS_VERIFY": "true",
            "ARNIE_LISTEN_ADDRESS": "127.0.0.1",
            "ARNIE_LISTEN_PORT": "8025",
            "RETRY_DELAY_SECONDS": "60",
            "RETRY_MAX_DELAY_SECONDS": "3600",
            "MAX_SEND_ATTEMPTS": "50",
            "MAX_QUEUE_LIFETIME_SECONDS": "432000",
            "MAX_MESSAGE_SIZE": "26214400",
            "MAX_RECIPIENTS": "100",
            "MAX_CONNECTIONS": "100",
            "MAX_SEND_RATE": "0",
            "REPORT_INTERVAL_SECONDS": "3600",
        }
        for k, want in defaults.items():
            self.assertIn(k, v, "%s not printed" % k)
            self.assertEqual(v[k], want, k)

    def test_every_key_is_documented_and_every_documented_key_exists(self):
        r = self.run_arnie(["--check-config"], extra_env={
            "OUTBOUND_EMAIL_HOST": "127.0.0.1"})
        self.assertEqual(r.returncode, 0, r.stderr)
        keys = {line.split("=", 1)[0] for line in r.stdout.splitlines()
                if "=" in line}
        self.assertGreater(len(keys), 30)

        def read(*path):
            with open(os.path.join(arnietest.ARNIE_SRCDIR, *path)) as f:
                return f.read()
        # The key tables: "| `KEY` |" (README marks the original keys
        # with " *"), and the example configuration's "#KEY=".
        docs = {
            "README.md": set(re.findall(r"^\| `([A-Z_]+)`(?: \*)? \|",
                                        read("README.md"), re.M)),
            "docs/configuration.md": set(re.findall(
                r"^\| `([A-Z_]+)` \|", read("docs", "configuration.md"),
                re.M)),
            "contrib/arnie.env.in": set(re.findall(
                r"^#?([A-Z_]+)=", read("contrib", "arnie.env.in"), re.M)),
            "docs/arnie.env.5": set(re.findall(
                r"^\.It Ev ([A-Z_]+)$", read("docs", "arnie.env.5"), re.M)),
        }
        for name, documented in docs.items():
            self.assertEqual(sorted(keys - documented), [],
                             "keys missing from " + name)
            self.assertEqual(sorted(documented - keys), [],
                             "keys in %s that the code does not know" % name)

    def test_every_option_and_command_is_in_the_man_pages(self):
        """What each program's --help lists is in its man page, and the
        man page lists nothing else."""
        def read(*path):
            with open(os.path.join(arnietest.ARNIE_SRCDIR, *path)) as f:
                return f.read()

        def man_flags(text):
            # ".Fl -check-config" and ".Op Fl c Ar file": "-c".
            return {"-" + f for f in re.findall(r"\bFl (-?[A-Za-z-]+)",
                                                text)}

        def help_flags(text):
            return set(re.findall(r"(?<![\w-])(--?[A-Za-z][A-Za-z-]*)",
                                  text))

        r = self.run_arnie(["--help"])
        self.assertEqual(r.returncode, 0)
        for page in ("arnie.8", "arnie-milter.8"):
            self.assertEqual(sorted(help_flags(r.stdout) -
                                    man_flags(read("docs", page))), [],
                             "options missing from " + page)
        q = subprocess.run([arnietest.ARNIE_QUEUE_BIN, "--help"],
                           capture_output=True, text=True)
        self.assertEqual(q.returncode, 0)
        page = read("docs", "arnie-queue.8")
        commands = set(re.findall(r"^  ([a-z-]+)", q.stdout, re.M))
        self.assertGreaterEqual(len(commands), 11, q.stdout)
        self.assertEqual(commands,
                         set(re.findall(r"^\.It Cm ([a-z-]+)", page, re.M)))
        self.assertEqual(sorted(help_flags(q.stdout) - man_flags(page)), [])
        # The options the program takes, from its source.
        src = read("queue", "main.c")
        longopts = set(re.findall(r'\{"([a-z-]+)", (?:required|no)_argument',
                                  src))
        self.assertEqual(sorted({"--" + o for o in longopts} -
                                man_flags(page)), [])

    def test_missing_host_exits_78_naming_it(self):
        path = write_env(self.tmp, ADMIN_ADDRESS="ops@example.com")
        r = self.check(path)
        self.assertEqual(r.returncode, EX_CONFIG)
        self.assertIn("OUTBOUND_EMAIL_HOST", r.stderr)
        # The daemon itself refuses to start the same way.
        r = self.run_arnie(["-c", path])
        self.assertEqual(r.returncode, EX_CONFIG)
        self.assertIn("OUTBOUND_EMAIL_HOST", r.stderr)

    def test_bad_values_exit_78_naming_the_key(self):
        bad = {
            "MAX_RECIPIENTS": "abc",
            "OUTBOUND_EMAIL_USE_TLS": "maybe",
            "ARNIE_LISTEN_PORT": "70000",
            "RETRY_DELAY_SECONDS": "-1",
            "MAX_MESSAGE_SIZE": "10MB",
            "SAVE_SENT_MAIL": "perhaps",
        }
        for key, value in bad.items():
            with self.subTest(key=key):
                path = write_env(self.tmp, OUTBOUND_EMAIL_HOST="h.example",
                                 OUTBOUND_EMAIL_PASSWORD=PASSWORD,
                                 **{key: value})
                r = self.check(path)
                self.assertEqual(r.returncode, EX_CONFIG, r.stdout)
                self.assertIn(key, r.stderr)
                self.assertNotIn(PASSWORD, r.stdout + r.stderr)

    def test_port_465_exits_78_suggesting_587(self):
        path = write_env(self.tmp, OUTBOUND_EMAIL_HOST="h.example",
                         OUTBOUND_EMAIL_HOST_PORT=465)
        r = self.check(path)
        self.assertEqual(r.returncode, EX_CONFIG)
        self.assertIn("587", r.stderr)
        self.assertIn("465", r.stderr)

    def test_environment_overrides_the_file(self):
        path = write_env(self.tmp, OUTBOUND_EMAIL_HOST="file.example",
                         MAX_RECIPIENTS=10)
        r = self.check(path, extra_env={"OUTBOUND_EMAIL_HOST": "env.example",
                                        "MAX_RECIPIENTS": "7"})
        self.assertEqual(r.returncode, 0, r.stderr)
        v = self.values(r.stdout)
        self.assertEqual(v["OUTBOUND_EMAIL_HOST"], "env.example")
        self.assertEqual(v["MAX_RECIPIENTS"], "7")

    def test_environment_overrides_the_file_in_the_daemon(self):
        up = self.upstream()
        env_port = arnietest.free_port()
        d = self.arnie(up.port, start=False)
        d.extra_env = {"ARNIE_LISTEN_PORT": str(env_port)}
        d.port = env_port
        d.start()
        self.assertFalse(arnietest.port_open(int(d.keys["ARNIE_LISTEN_PORT"])))
        smtp_send(env_port, "a@example.com", ["b@example.org"],
                  make_message("envport"))
        self.assertDeliveredOnce(up, "envport")

    def test_unknown_key_is_warned_about(self):
        path = self.env_file("OUTBOUND_EMAIL_HOST=h.example\n"
                             "OUTBOUND_EMAIL_HOSTNAME=typo.example\n")
        r = self.check(path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("OUTBOUND_EMAIL_HOSTNAME", r.stderr)

    def test_original_env_syntax(self):
        home = os.path.join(self.tmp, "home")
        os.makedirs(home)
        path = self.env_file(
            "# an original Arnie .env\n"
            "\n"
            "export OUTBOUND_EMAIL_HOST=email-smtp.eu-west-1.amazonaws.com\n"
            "OUTBOUND_EMAIL_HOST_PORT = 587\n"
            "OUTBOUND_EMAIL_USE_TLS=True\n"
            "OUTBOUND_EMAIL_USERNAME='AKIA EXAMPLE'\n"
            "OUTBOUND_EMAIL_PASSWORD=pa#ss\n"
            'ADMIN_ADDRESS="ops@example.com"  # who gets reports\n'
            "SAVE_SENT_MAIL=yes\n"
            "FILES_DIRECTORY=~/arnie\n")
        r = self.check(path, extra_env={"HOME": home})
        self.assertEqual(r.returncode, 0, r.stderr)
        v = self.values(r.stdout)
        self.assertEqual(v["OUTBOUND_EMAIL_HOST"],
                         "email-smtp.eu-west-1.amazonaws.com")
        self.assertEqual(v["OUTBOUND_EMAIL_HOST_PORT"], "587")
        self.assertEqual(v["OUTBOUND_EMAIL_USE_TLS"], "true")
        self.assertEqual(v["OUTBOUND_EMAIL_USERNAME"], "AKIA EXAMPLE")
        self.assertEqual(v["ADMIN_ADDRESS"], "ops@example.com")
        self.assertEqual(v["SAVE_SENT_MAIL"], "true")
        self.assertEqual(v["FILES_DIRECTORY"], os.path.join(home, "arnie"))
        self.assertNotIn("pa#ss", r.stdout + r.stderr)

    def test_dot_env_in_the_working_directory_is_read(self):
        write_env(self.tmp, name=".env", OUTBOUND_EMAIL_HOST="cwd.example")
        r = self.check()                   # run_arnie runs in self.tmp
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.values(r.stdout)["OUTBOUND_EMAIL_HOST"],
                         "cwd.example")

    def test_password_and_password_file_together_is_an_error(self):
        pw = os.path.join(self.tmp, "pw")
        with open(pw, "w") as f:
            f.write(PASSWORD + "\n")
        path = write_env(self.tmp, OUTBOUND_EMAIL_HOST="h.example",
                         OUTBOUND_EMAIL_PASSWORD=PASSWORD,
                         OUTBOUND_EMAIL_PASSWORD_FILE=pw)
        r = self.check(path)
        self.assertEqual(r.returncode, EX_CONFIG)
        self.assertIn("PASSWORD", r.stderr)
        self.assertNotIn(PASSWORD, r.stdout + r.stderr)

    def test_unreadable_password_file_is_an_error(self):
        path = write_env(self.tmp, OUTBOUND_EMAIL_HOST="h.example",
                         OUTBOUND_EMAIL_PASSWORD_FILE=os.path.join(
                             self.tmp, "missing"))
        r = self.check(path)
        self.assertEqual(r.returncode, EX_CONFIG)
        self.assertIn("OUTBOUND_EMAIL_PASSWORD_FILE", r.stderr)


    def test_listen_port_in_use_is_a_clear_error(self):
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write_env(self.tmp, OUTBOUND_EMAIL_HOST="127.0.0.1",
                         OUTBOUND_EMAIL_USE_TLS=False,
                         FILES_DIRECTORY=self.files_dir,
                         ARNIE_LISTEN_PORT=port)
        r = self.run_arnie(["-c", path], timeout=30)
        self.assertEqual(r.returncode, 71, r.stderr)
        self.assertIn("cannot listen on 127.0.0.1 port %d" % port, r.stderr)


if __name__ == "__main__":
    arnietest.main()
