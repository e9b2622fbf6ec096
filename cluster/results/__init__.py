"""Layer 4, results: scoring the best checkpoints next to the baselines, ensembles, the summary, experiments in
storage."""
