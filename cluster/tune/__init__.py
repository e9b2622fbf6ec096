"""Layer 3, tuning: Ray, the Tuner, schedulers and the driver's callbacks (progress, result histories, retention)."""
