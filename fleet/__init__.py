"""Fleet rollout: deploy, supervise, inspect and stop LatScope on every server of a conf
directory over SSH (design §11)."""
