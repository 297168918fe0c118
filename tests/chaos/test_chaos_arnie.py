"""The short chaos run of make check for arnie: 20 s of load with SIGKILLs
at random moments (at least 5) and a misbehaving upstream; no acknowledged
message may be lost, and no kill may cost more than one extra delivery.
tests/chaos/run.sh SECONDS is the long run."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chaos  # noqa: E402

if __name__ == "__main__":
    sys.exit(chaos.main(["--seconds", "20", "--target", "arnie",
                         "--min-kills", "5"]))
