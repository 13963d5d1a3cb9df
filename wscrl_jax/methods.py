"""Method registry: the config's `method` name -> the class implementing the loop interface."""

from wscrl_jax.models.lcm_method import LCMMethod

METHODS = {"lcm": LCMMethod}


def get_method(config):
    return METHODS[config.method](config)
