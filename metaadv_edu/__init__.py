"""metaadv-edu: adversarial examples, GANs and meta-learning, derived and checked in notebooks.

The notebooks in ``notebooks/`` are the course; this package holds every piece of reusable code
they run, so that the same function is read, tested and used in one place.
"""

from metaadv_edu.device import float64_device, pick_device, seed_everything

__all__ = ["__version__", "float64_device", "pick_device", "seed_everything"]
__version__ = "0.1.0"
