"""Feature groups computed as of a cutoff, the offline feature store and point-in-time joins."""
