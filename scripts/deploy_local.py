#!/usr/bin/env python3
"""Try the real networked deployment on one machine: SuperLink + N SuperNodes on 127.0.0.1.

    .venv/bin/python scripts/deploy_local.py --nodes 2 -c "num-server-rounds=2 local-epochs=1"
    .venv/bin/python scripts/deploy_local.py --nodes 2 --insecure     # no TLS/auth, by name only

TLS and SuperNode authentication by default (fresh CA and keys from docker/make_certs.sh).
Stops every process it started, exits non-zero on failure, prints ``results: <run dir>`` last.
All the work is in fedapp/deploy.py (shared with tests/test_deployment.py); see
docs/DEPLOYMENT.md for the same steps on separate machines.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root, for `import fedapp`

from fedapp.deploy import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
