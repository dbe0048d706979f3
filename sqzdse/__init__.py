"""sqzdse: design-space exploration of SqueezeNet's Fire-module metaparameters."""

__version__ = "0.2.0"
