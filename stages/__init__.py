"""One thin script per DVC stage; run as `python -m stages.<name>` from the repository root.

Importing this package puts this checkout's `src/` first on the import path, so a stage runs the tinygpt
beside it, the code DVC hashed, whichever copy the venv was installed from (a `dvc exp run --temp` or
`--queue` copy under .dvc/tmp/exps/, a second clone sharing the first one's venv)."""
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parent.parent / "src")
if sys.path[0] != SRC:
    sys.path.insert(0, SRC)
