"""The parts of the two report commands, one job per module.

`scripts.report` (a training run): `reading` (run directory and sample files),
`estimates` (βF/N rows of every estimator) and `figures` (the PNGs).
`scripts.tfep_report` (a learned-TFEP run): `tfep_reading` (config, samples,
works, trained map), `tfep_estimates` (the table against the MBAR reference),
`tfep_structure` (g(r) before and after the map) and `tfep_figures`.
"""
