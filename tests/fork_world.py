"""A fork server for data-parallel test runs: it imports torch and reprogram once, then runs each
command it reads in N forked processes, in the environment torchrun gives its workers (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT). The workers skip their imports, which is most of a
short run's time on 2 cores. ``tests/test_distributed.py`` also runs the real ``torchrun`` once.

    python fork_world.py N

reads one JSON object per line on stdin: ``{"run": ["cli", ARGS...]}`` (``reprogram ARGS``) or
``{"run": ["script", FILE, ARGS...]}`` (a Python file), with ``"stdout": PATH`` to keep each
worker's standard output in ``PATH.RANK`` (else it goes to stderr); for each it writes
``{"pids": [...]}`` once the workers started and ``{"codes": [...]}`` (exit codes; -9 for
SIGKILL) once they ended. It stops at the end of stdin.
"""

from __future__ import annotations

import json
import os
import runpy
import socket
import sys
import traceback

import open_clip  # noqa: F401  (imported once, here, for every worker)
import torch.distributed  # noqa: F401

import reprogram.cli
import reprogram.engine.train  # noqa: F401


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker(command: list[str]) -> int:
    kind, args = command[0], command[1:]
    try:
        if kind == "cli":
            reprogram.cli.main(args)
        else:
            sys.argv = args
            runpy.run_path(args[0], run_name="__main__")
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def _start(size: int, command: list[str], stdout: str | None) -> list[int]:
    port, children = _free_port(), []
    for rank in range(size):
        pid = os.fork()
        if pid == 0:
            if stdout:
                os.dup2(os.open(f"{stdout}.{rank}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
            else:
                os.dup2(2, 1)  # stdout is the protocol's
            os.environ.update(
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                WORLD_SIZE=str(size),
                LOCAL_WORLD_SIZE=str(size),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port),
            )
            code = 1
            try:
                code = _worker(command)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)
    return children


def _say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    size = int(sys.argv[1])
    for line in sys.stdin:
        request = json.loads(line)
        children = _start(size, request["run"], request.get("stdout"))
        _say({"pids": children})
        _say({"codes": [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in children]})


if __name__ == "__main__":
    main()
