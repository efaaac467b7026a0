"""Fit scaling laws to results tables: loss surfaces, isoFLOP analyses, backtests,
learning-rate/batch-size laws, muP transfer checks and repeated-data risk.

Pure numpy/scipy/lmfit/pandas; importing ``fits`` never imports torch. Names load on first
use, so ``from fits import load_fit`` stays light (no pandas or scipy until a fit is run).

>>> from fits import fit_loss_surface, load_fit, isoflop_analysis, backtest
"""
from importlib import import_module

from .errors import InputError

__version__ = "0.1.0"

_EXPORTS = {
    "budget_groups": "._data",
    "read_table": "._data",
    "final_rows": "._data",
    "load_preset": ".presets",
    "list_presets": ".presets",
    "resolve_fit": ".presets",
    "surface_data": "._data",
    "FORMS": ".forms",
    "Form": ".forms",
    "chinchilla": ".forms",
    "chinchilla_allocation": ".forms",
    "data_constrained": ".forms",
    "effective_data": ".forms",
    "get_form": ".forms",
    "kaplan": ".forms",
    "farseer": ".forms",
    "interaction": ".forms",
    "beta_n": ".forms",
    "numeric_allocation": ".forms",
    "register_form": ".forms",
    "FormComparison": ".selection",
    "compare_forms": ".fitting",
    "plot_forms": ".selection",
    "DesignResult": ".design",
    "design_runs": ".design",
    "simulate_design": ".design",
    "LossSurfaceFit": ".surface",
    "fit_loss_surface": ".fitting",
    "load_fit": ".surface",
    "residual_interaction": ".diagnostics",
    "DownstreamFit": ".downstream",
    "fit_downstream": ".downstream_fit",
    "load_downstream": ".downstream",
    "IsoflopResult": ".isoflop",
    "isoflop_analysis": ".isoflop",
    "BacktestResult": ".backtesting",
    "backtest": ".backtesting",
    "verify": ".verification",
    "HyperparameterFit": ".hparams",
    "fit_hyperparameters": ".hparams",
    "load_hparams": ".hparams",
    "critical_batch": ".hparams",
    "critical_batch_law": ".hparams",
    "noise_scale_batch": ".hparams",
    "TransferResult": ".transfer",
    "check_transfer": ".transfer",
    "RiskAssessment": ".repetition",
    "double_descent_risk": ".repetition",
    "ridgeless_risk": ".repetition",
    "ridge_risk": ".repetition",
    "theory_curve": ".repetition",
    "plot_theory": ".repetition",
    "detect_double_descent": ".repetition",
    "epoch_bumps": ".repetition",
    "capacity_from_bump": ".repetition",
}

__all__ = ["InputError", "__version__", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fits' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
