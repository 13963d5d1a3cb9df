"""Normalising-flow bijectors on distrax (`ws-crl.md` section 7): SO(n) rotations, coupling layers
(affine, piecewise-linear, rational-quadratic spline) and the coupling stack of the reference's
`make_scalar_transform`."""
