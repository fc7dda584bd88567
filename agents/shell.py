"""``builtin.shell``: run a command on the node, only where an admin enabled it.

Why off by default and refused twice: a shell task is remote code execution by design. The
manager refuses a workflow that uses it unless ``agent.allow_shell`` is set (422
``shell_disabled``), and each agent refuses it too unless its own settings allow it, so a
message that reached the broker some other way still runs nothing.

Why a clean environment: the agent's environment holds the broker URL with its password; a
command gets only ``PATH``, ``LANG``, ``HOME`` (a fresh temporary directory, also its working
directory) and nothing inherited, so a careless ``env`` or a child that dumps its environment
leaks nothing. It is not a sandbox: the command runs as the agent's user, which can read the
agent's own ``/proc/<pid>/environ``; enable shell tasks only for users trusted with the agent.
"""

from __future__ import annotations

import subprocess
import tempfile
from typing import Any

SHELL_TASK = "builtin.shell"
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_OUTPUT_CHARS = 65536
MAX_COMMAND_CHARS = 16384
DEFAULT_TIMEOUT_S = 3600.0


class ShellDisabled(PermissionError):
    """This agent was not allowed to run shell commands."""


def clean_environment(home: str) -> dict[str, str]:
    return {"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "HOME": home}


def _checked_command(command: Any) -> str:
    if not isinstance(command, str) or not command.strip() or len(command) > MAX_COMMAND_CHARS or "\x00" in command:
        raise ValueError(f"command must be a non-empty string of at most {MAX_COMMAND_CHARS} characters")
    return command


def _tail(text: str) -> str:
    return text[-MAX_OUTPUT_CHARS:]


def run_shell(command: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Run ``command`` with ``/bin/sh -c`` in a clean environment; a non-zero exit fails the task."""
    command = _checked_command(command)
    with tempfile.TemporaryDirectory(prefix="rm-shell-") as home:
        done = subprocess.run(["/bin/sh", "-c", command], cwd=home, env=clean_environment(home), capture_output=True,
                              text=True, errors="replace", timeout=float(timeout_s), stdin=subprocess.DEVNULL)
    result = {"returncode": done.returncode, "stdout": _tail(done.stdout), "stderr": _tail(done.stderr)}
    if done.returncode != 0:
        raise RuntimeError(f"command exited with {done.returncode}: {_tail(done.stderr)[-500:]}")
    return result


def shell_task(allowed: bool):  # noqa: ANN201 - the task body for this agent
    """The ``builtin.shell`` body: runs the command if this agent allows it, refuses otherwise."""
    def shell(command: str = "", timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        if not allowed:
            raise ShellDisabled("builtin.shell is disabled on this agent (agent.allow_shell is false)")
        return run_shell(command, timeout_s)

    return shell
