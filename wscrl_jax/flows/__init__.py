"""Normalising-flow bijectors on distrax (reference: `ws_crl/encoder/flow.py`,
`ws_crl/transforms.py`): SO(n) rotations, coupling layers
(affine, piecewise-linear, rational-quadratic spline) and the coupling stack of the reference's
`make_scalar_transform`."""
