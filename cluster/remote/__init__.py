"""Layer 6 (beside :mod:`cluster.api`), remote clusters: jobs sent through the Ray Jobs API and KubeRay manifests."""
