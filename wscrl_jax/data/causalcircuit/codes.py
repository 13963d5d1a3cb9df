"""CausalCircuit stage-1 codes on disk: what the image VAE writes and stage 2 trains on.

Reference: `experiments/causalcircuit_reduce_dim.py: save_representations` (writes an 8-tuple
of tensors per split) and `experiments/causalcircuit.py: get_dataloader`
(reads it). Here a stage-1 run writes `WORKDIR/encoded/member<i>.npz` (`<field>_<split>` for
the fields below, rows in the download's order) and `WORKDIR/encoded/meta.json` with
`source: causalcircuit`, through the same atomic writers as MD-CRL's stage 1
(`data/encoded.py`: `write_encoded` per member).

Fields per split (N pairs): x1, x2 [N, latent] (encoder means of the before / after image,
unprojected), z1, z2 [N, 4] (true causal variables), e1, e2 [N, 4] (true noise),
intervention_labels [N] (int32), true_interventions [N, 4] (int32 masks).
"""

from typing import Dict, Optional

import jax.numpy as jnp
import numpy as np

from wscrl_jax.data.encoded import (Stage1OutputMissing, read_encoded_meta, read_member_arrays,
                                    write_encoded_meta)

CODE_FIELDS = ("x1", "x2", "z1", "z2", "e1", "e2", "intervention_labels", "true_interventions")
SOURCE = "causalcircuit"


def write_codes_meta(workdir: str, members, splits: Dict[str, int], latent_dim: int,
                     resolution: int):
    """`encoded/meta.json` (after every member's file: its presence means complete)."""
    return write_encoded_meta(workdir, {
        "source": SOURCE, "latent_dim": int(latent_dim), "z_dim": 4,
        "resolution": int(resolution), "members": [list(m) for m in members],
        "splits": {k: int(v) for k, v in splits.items()}})


def load_codes(workdir: str, member_index: int,
               true_graph: Optional[np.ndarray] = None) -> Dict[str, Dict[str, jnp.ndarray]]:
    """Stage-2 data from a CausalCircuit stage-1 workdir: {train, dci_train, val, test:
    {field: [N, ...]}} with `dci_train` the training codes (the reference's `dci_train` read
    falls back to `train`: ws-crl gotcha 28), plus {"truth": {"adjacency": [4, 4]}} where
    `true_graph` is known. Raises `Stage1OutputMissing` (one line) for a missing or partial
    stage 1."""
    if read_encoded_meta(workdir).get("source") != SOURCE:
        raise Stage1OutputMissing(
            f"data.stage1_workdir={workdir!r} does not hold CausalCircuit codes; run "
            "configs/causalcircuit_reduce_dim.py there first")
    _, arrays = read_member_arrays(workdir, member_index, CODE_FIELDS)
    out = {}
    for split in ("train", "val", "test"):
        out[split] = {k: jnp.asarray(arrays[f"{k}_{split}"],
                                     jnp.int32 if k in CODE_FIELDS[6:] else jnp.float32)
                      for k in CODE_FIELDS}
    out["dci_train"] = out["train"]
    if true_graph is not None:
        out["truth"] = {"adjacency": jnp.asarray(true_graph, jnp.int32)}
    return out
