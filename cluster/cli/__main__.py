"""``python -m cluster.cli``: what a submitted job and a RayJob run on the cluster."""

from cluster.cli.commands import main

main()
