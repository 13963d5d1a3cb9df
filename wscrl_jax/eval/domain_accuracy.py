"""Domain accuracies of learned codes: how well a linear classifier reads the domain from each
block of the code (reference: `MixingMDEncodedAutoencoderPL.validation_step`;
scikit-learn's `LogisticRegression(random_state=0, max_iter=500)`, as the reference).

Blocks: `domain_acc` (all of z_hat), `hz_domain_acc` (the invariant block h_inv = the first
`d_model` columns), `~hz_domain_acc` (the spurious block h_sp = the rest). Invariant codes that
carry no domain information give chance accuracy on `hz_domain_acc`.
"""

import numpy as np


def _blocks(d_model: int):
    return (("domain_acc", slice(None)), ("hz_domain_acc", slice(0, d_model)),
            ("~hz_domain_acc", slice(d_model, None)))


def domain_accuracies(z_hat, domains, d_model: int) -> dict:
    """In-sample accuracy (fitted and scored on the same rows), as the reference logs it.

    Args: z_hat [n, latent]; domains [n] or [n, 1]. Returns {key: float} for the three blocks.
    """
    from sklearn.linear_model import LogisticRegression

    zh = np.asarray(z_hat, np.float32)  # the reference fits on float32 codes
    dom = np.asarray(domains).reshape(-1)
    out = {}
    for key, sl in _blocks(d_model):
        feats = zh[:, sl]
        clf = LogisticRegression(random_state=0, max_iter=500).fit(feats, dom)
        out[key] = float(np.mean(clf.predict(feats) == dom))
    return out


def heldout_domain_accuracies(z_train, d_train, z_test, d_test, d_model: int) -> dict:
    """Accuracy of a classifier fitted on train codes and scored on test codes (not in the
    reference; the in-sample accuracy of wide codes is inflated, like in-sample R^2).

    Args: z_train [n_tr, latent]; d_train [n_tr]; z_test [n_te, latent]; d_test [n_te].
    Returns {"heldout_" + key: float} for the three blocks.
    """
    from sklearn.linear_model import LogisticRegression

    out = {}
    for key, sl in _blocks(d_model):
        clf = LogisticRegression(random_state=0, max_iter=500).fit(z_train[:, sl], d_train)
        out[f"heldout_{key}"] = float(np.mean(clf.predict(z_test[:, sl]) == d_test))
    return out
