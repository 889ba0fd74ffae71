"""idc's test suite. A regular package (not a namespace one) so that `tests.helpers` resolves here even
where a dependency installs its own top-level `tests` package (torchstain 1.4.1 does)."""
