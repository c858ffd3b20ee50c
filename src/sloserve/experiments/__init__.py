"""Experiments that compose profiles, policies, the simulator and the server, and report."""
