"""Install the optional interop packages (transformers, transformer-lens) used by converter tests.

Kept in a script so that a failure to install them (no network) leaves the rest of the suite
running; the tests that need them skip cleanly when they are absent.
"""

import subprocess
import sys

PKGS = ["transformers>=4.40"]

for pkg in PKGS:
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", pkg])
    if r.returncode:
        print(f"WARNING: could not install {pkg}; tests that need it will be skipped", file=sys.stderr)
