"""Everything that talks to the world: the Kubernetes API, serving pods, Prometheus, kopf."""
