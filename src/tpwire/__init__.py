"""tpwire: a protocol specification compiler with pickle-free bindings for torch.distributed."""

__version__ = "0.1.0"
