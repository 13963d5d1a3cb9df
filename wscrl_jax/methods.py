"""Method registry: the config's `method` name -> the class implementing the loop interface."""

from wscrl_jax.models.lcm_method import LCMMethod
from wscrl_jax.models.mdcrl_method import MDCRLMethod

METHODS = {"lcm": LCMMethod, "mdcrl": MDCRLMethod}


def get_method(config):
    return METHODS[config.method](config)
