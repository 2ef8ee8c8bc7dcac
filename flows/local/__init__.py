"""The scalable flow: local, size-transferable couplings of a crystal's displacements
on a Gaussian base (flows.local.model.LocalSolidFlow, docs/scalable_flows.md)."""
