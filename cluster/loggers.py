"""Kept for experiments written before the layered layout: Tune pickled this module's classes into their
``tuner.pkl``, and a resume unpickles them by this path. New code imports :mod:`cluster.tune.loggers`."""

from cluster.tune.loggers import *  # noqa: F403
from cluster.tune.loggers import __all__  # noqa: F401
