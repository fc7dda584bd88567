"""A discrete-event simulator that drives the production decision code on a virtual clock.

Why: admins need a policy's cost and queue wait before the burst, and 10,000 nodes and a
million tasks cannot run on one machine, but the same ``decide``, budget arithmetic, ledger
closing and launch backoff can. Entry points: :func:`rm.simulator.run.simulate` and
``rmctl simulate``.
"""

# Names only (no numpy import), so ``rmctl --help`` does not load the simulator.
WORKLOADS = ("burst", "diurnal", "spiky")
POLICIES = ("default", "proactive", "ca", "keda", "static", "onprem")
