"""Statistics both the stream worker and the sinks use (the quantile sketch): its own package,
so that neither imports the other for it."""
