"""Built-in models. Importing a module registers its kinds in `learnscope.registry.MODELS`."""

from . import convnet, mlp, resnet, scale_invariant, twolayer, vit  # noqa: F401
