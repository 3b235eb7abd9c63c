"""Simulated tablets working offline against the real server, and the invariants that must hold once
they have all synced: shared by `canbao simulate` and the randomized fault suite (docs/fault-suite.md).

A `World` (world.py) holds the tablets (tablet.py: the reference client, each with its own SQLite
store, behind a `FaultyTransport`), the back office (REST as admin and township reviewers) and a
database connection for checking. `check_invariants` (invariants.py, reading through checker.py)
runs after `World.quiesce`; runner.py is `canbao simulate`.
"""

from backend.tools.simulate.checker import Checker, InvariantResult, report
from backend.tools.simulate.invariants import INVARIANTS, PENDING, check_invariants, pending_from_env
from backend.tools.simulate.runner import Options, Progress, Summary, run
from backend.tools.simulate.tablet import WORK_ACTIONS, SimTablet, WorkAction
from backend.tools.simulate.world import SimulationError, TabletSpec, World

__all__ = [
    "INVARIANTS",
    "PENDING",
    "WORK_ACTIONS",
    "Checker",
    "InvariantResult",
    "Options",
    "Progress",
    "SimTablet",
    "SimulationError",
    "Summary",
    "TabletSpec",
    "WorkAction",
    "World",
    "check_invariants",
    "pending_from_env",
    "report",
    "run",
]
