"""The paper's flow: lattice base, transformer conditioners, circular spline couplings
(flows.transformer.model.SolidFlow)."""
