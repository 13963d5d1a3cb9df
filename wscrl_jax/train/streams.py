"""The PRNG streams of a member, named in one table.

A member's model seed gives `PRNGKey(seed)`, split once into the init key and the run key
(`state.init_member_state`); everything else is `fold_in` of a stream number below, so two
streams never share bits and adding one leaves the others unchanged.

| name | folded into | used for |
| --- | --- | --- |
| `SHUFFLE` | the run key, then the epoch | each epoch's permutation of the training rows |
| `STEP` | the run key, then the step | the loss's random draws at that step |
| `EVALUATION` | `PRNGKey(seed)` | the final evaluation's key |
| `GRAPH_EVALUATION` | the evaluation key | the graph evaluations (ENCO, implicit graph) |

Data seeds have their own streams inside the dataset generators (`data/scaling.py`,
`data/mixing.py`), where they follow the reference's order of draws.
"""

SHUFFLE = 0
STEP = 1
EVALUATION = 2
GRAPH_EVALUATION = 11
