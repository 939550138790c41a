"""A deterministic, seeded simulator of a raftkv cluster.

Every node runs the real RaftDriver (raftkv.engines.native.driver) with the
real ProposalBook/ReadBook, recovery and codec, on one asyncio loop with a
virtual clock (raftsim.loop), over a simulated disk (raftsim.disk) and
network (raftsim.network). ``run_simulation(seed)`` is a pure function of
its seed. See docs/simulation.md.
"""

from raftsim.simulation import SimConfig, SimResult, SimulationFailure, run_simulation

__all__ = ["SimConfig", "SimResult", "SimulationFailure", "run_simulation"]
