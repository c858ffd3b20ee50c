"""Planners: cost-minimal serving plans for multi-model apps under an end-to-end SLO.

Nothing is imported here, so ``sloserve --help`` stays fast; import what you need:

- problem and plan data: :mod:`~sloserve.planning.problem` (``PlanningProblem``, module tables),
  :mod:`~sloserve.planning.plan` (``Plan``, ``ModulePlan``, ``PlanTuple``);
- files: :mod:`~sloserve.planning.files` (app file, hardware catalogue → ``load_problem``),
  :mod:`~sloserve.planning.plan_io` (plan file: ``save_plan`` / ``load_plan``);
- planners: :mod:`~sloserve.planning.harpagon` (``plan_harpagon``),
  :mod:`~sloserve.planning.bruteforce` (``plan_bruteforce``, the exact reference),
  :mod:`~sloserve.planning.nexus` (``plan_nexus``), :mod:`~sloserve.planning.inferline`
  (``plan_inferline``); the shared latency model is :mod:`~sloserve.planning.latency`;
- checking and running plans: :mod:`~sloserve.planning.check` (``plan_problems``),
  :mod:`~sloserve.planning.simulate` (``simulate_plan``);
- Sponge's integer program: :mod:`~sloserve.planning.sponge_ip` (the one solver adapter).
"""
