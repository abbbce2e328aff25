"""The apply engine: an app (source + cluster + ApplySet), its plan, prune,
sync, history, diff and rollback. Drivers (the CLI, the agent) call it; it
never knows which one did."""
