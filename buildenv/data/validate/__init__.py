"""Validation: every dataset against its declared columns, streamed and vectorised
(`validate`), with the per-batch kernels (`column_checks`), exact duplicate counts
(`uniqueness`), what counts mean (`violations`) and partitioned datasets (`partitioned`)."""
