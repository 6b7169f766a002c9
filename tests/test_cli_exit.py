"""The ``deepflow`` process ends as Python's exit would, less the module teardown (cli._exit):
exit codes, output written through a pipe, non-daemon threads waited for (idle thread pools too),
exit handlers run, in that order. Each case is a real ``deepflow`` process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
DEEPFLOW = str(Path(sys.executable).with_name("deepflow"))


def deepflow(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([DEEPFLOW, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_exit_codes_and_output_through_a_pipe_are_whole() -> None:
    listed = deepflow("entries")
    assert listed.returncode == 0 and listed.stdout.rstrip().endswith("┘")  # the table's last line came through
    assert "traffic" in listed.stdout
    usage = deepflow("validate")
    assert usage.returncode == 2 and "Missing argument" in usage.stderr
    unknown = deepflow("validate", "no-such-entry")
    assert unknown.returncode == 2 and "unknown dataset entry 'no-such-entry'" in unknown.stderr


def test_threads_then_exit_handlers_run_before_the_process_ends(tmp_path: Path) -> None:
    log = tmp_path / "order.txt"
    code = (
        "import atexit, sys, threading, time\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from deepflow import cli\n"
        f"log = {str(log)!r}\n"
        "def write(line): open(log, 'a').write(line + '\\n')\n"
        "threading.Thread(target=lambda: (time.sleep(0.5), write('thread'))).start()\n"
        "ThreadPoolExecutor(2).submit(lambda: None)  # left idle, never shut down\n"
        "atexit.register(write, 'atexit')\n"
        "sys.argv = ['deepflow', 'entries']\n"
        "cli.main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert log.read_text().split() == ["thread", "atexit"]
