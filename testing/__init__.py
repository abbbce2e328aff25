"""Test and development infrastructure kept out of the product package (and
out of the wheel): the local control plane and helpers shared by tests,
benchmarks and the demo."""
