"""`make bench`: every stage measured against its reference in the same run."""
