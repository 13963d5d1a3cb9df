"""CausalCircuit: reading the download, a toy generator, and the TFDS `causalcircuit` dataset."""
