"""A small inventory web app, used as the sample tree for `sluice analyze examples/`."""
