"""Train small decoder-only transformers under muP and record every evaluation.

Needs the ``probes`` extra (torch, transformers, tokenizers). Names load on first use.
"""
from importlib import import_module

_EXPORTS = {
    "ModelConfig": ".config", "TrainConfig": ".config", "DataConfig": ".config", "ProbeConfig": ".config",
    "build_model": ".model", "count_params_meta": ".model", "param_groups": ".mup",
    "make_optimizer": ".mup", "load_corpus": ".data", "train_probe": ".train",
    "load_grid": ".sweep", "expand_grid": ".sweep", "run_sweep": ".sweep", "export_results": ".sweep",
    "sweep_status": ".sweep", "design_grid": ".sweep", "coord_check": ".coord_check",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'probes' has no attribute {name!r}")
