"""One recorded ``gat-pyg`` command of a benchmark: printed, run in this interpreter (so the
installed package, whatever ``gat-pyg`` is on the PATH), and its ``--out`` results read
back. The benchmarks that train through the command (reproduce_gat, minibatch,
graph_classification) share it."""
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple


def relative(path: Path) -> str:
    """``path`` relative to the working directory if it lies below it, so that recorded
    commands do not name this machine's folders."""
    return str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)


def run_gat_pyg(command: List[str], out: Path) -> Tuple[str, dict]:
    """Runs ``command`` (``['gat-pyg', ...]``, writing ``--out out``) as
    ``python -m gat_pyg ...``; returns the command as a shell line and the results."""
    line = shlex.join(command)
    print('$ ' + line, flush=True)
    subprocess.run([sys.executable, '-m', 'gat_pyg', *command[1:]], check=True)
    return line, json.loads(out.read_text())
