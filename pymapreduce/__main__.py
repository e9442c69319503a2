import os
import sys

# An embedded cluster starts its daemons with PYTHONSAFEPATH set (pymapreduce/local.py);
# taken out again here, so that what tasks start (`python script.py`) finds its modules
# as it would anywhere else
if os.environ.pop("PYMAPREDUCE_SAFEPATH", None) is not None:
    os.environ.pop("PYTHONSAFEPATH", None)

from .cli import main  # noqa: E402

sys.exit(main())
