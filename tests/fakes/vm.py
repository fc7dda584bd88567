"""Fake VMs that really boot: a VM turning running in a fake cloud starts a real agent.

Why: the end-to-end tests burst to a fake cloud through the real SDK, and the nodes must then
register, enrol and run tasks as a real VM's agent would. The runner reads the bootstrap file
from the VM's cloud-init (exactly what cloud-init would write to ``/etc/hybrid-rm``), writes it
under the test's directory and starts ``python -m agents.main`` with the same environment the
systemd unit sets. Deleting the VM kills the agent's whole process group at once, as a VM's
power-off does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from agents.enrol import BOOTSTRAP_ENV, SETTINGS_FILE_ENV
from providers.bootstrap import read_bootstrap_file
from tests.fakes.common import FakeCloudState, FakeVm

REPO_ROOT = Path(__file__).resolve().parents[2]


class VmRunner:
    """Boots an agent for every VM of ``state`` that turns running; kills it when the VM is deleted."""

    def __init__(self, state: FakeCloudState, root: Path) -> None:
        self.state = state
        self.root = root
        self.processes: dict[str, subprocess.Popen] = {}
        self.booted: list[str] = []
        self._lock = threading.Lock()
        state.hooks.on_running = self.boot
        state.hooks.on_deleted = self.power_off

    def boot(self, vm: FakeVm) -> None:
        bootstrap = read_bootstrap_file(vm.user_data)
        if bootstrap is None:
            return  # not one of ours, or no cloud-init: a VM with nothing to run
        disk = self.root / vm.name
        disk.mkdir(parents=True, exist_ok=True)
        (disk / "bootstrap.json").write_text(json.dumps(bootstrap))
        env = dict(os.environ)
        env.pop("RM_AGENT_SETTINGS", None)
        env[BOOTSTRAP_ENV] = str(disk / "bootstrap.json")
        env[SETTINGS_FILE_ENV] = str(disk / "agent.json")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        with self._lock, open(disk / "agent.log", "ab") as out:
            self.processes[vm.name] = subprocess.Popen(
                [sys.executable, "-m", "agents.main"], env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            self.booted.append(vm.name)

    def power_off(self, vm: FakeVm) -> None:
        with self._lock:
            process = self.processes.pop(vm.name, None)
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)

    def log(self, name: str) -> str:
        try:
            return (self.root / name / "agent.log").read_text(errors="replace")
        except OSError:
            return ""

    def running(self) -> list[str]:
        with self._lock:
            return [name for name, process in self.processes.items() if process.poll() is None]

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.power_off(FakeVm(ref="", name=name, tags={}, user_data=""))
