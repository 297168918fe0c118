"""The short chaos run of make check for arnie-milter behind a private
Postfix: 20 s of load through Postfix with SIGKILLs of arnie-milter at
random moments (at least 5) and a misbehaving upstream; no message Postfix
acknowledged may be lost, and no kill may cost more than one extra
delivery.  tests/chaos/run.sh SECONDS is the long run."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chaos  # noqa: E402

if __name__ == "__main__":
    if os.geteuid() != 0:
        # Postfix's master must start as root; CI runs as root, so there
        # this is a failure, never a skip.
        print("SKIP: a private Postfix needs root")
        sys.exit(1 if os.environ.get("CI") else 77)
    sys.exit(chaos.main(["--seconds", "20", "--target", "milter",
                         "--min-kills", "5"]))
