"""The issue's example workflow, written out literally: the specification the tests hold the code to.

It stays a literal here (not imported from ``rm.demo``) so that a change to the demo's workflow
cannot silently change what the tests check; ``test_workflow.py`` checks the two agree.
"""

S1_ORTHO = {"name": "s1-ortho", "tasks": [
    {"name": "fetch", "run": "builtin.sleep", "args": {"seconds": 0.5}},
    {"name": "tile", "run": "builtin.sleep", "args": {"seconds": 2}, "replicate": 40, "after": ["fetch"]},
    {"name": "zip", "run": "builtin.echo", "args": {"ok": True}, "after": ["tile"]}]}
