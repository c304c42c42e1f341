"""Dataset readers: every on-disk layout a protocol reads, one place to look for a layout."""
