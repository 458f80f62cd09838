"""KFP components: one folder each, every body one call into trainpipe."""
