"""Layer 1, what the user asked for: options, search spaces, storage locations and the run's plan, all checked before
torch and Ray load."""
