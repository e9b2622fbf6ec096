"""Layer 5, reports: an experiment read back as plots and Markdown, and TensorBoard served on it."""
