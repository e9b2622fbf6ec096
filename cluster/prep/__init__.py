"""Layer 2, data preparation: sources read in batches, forecasting and text datasets written once as Parquet shards
plus a manifest."""
