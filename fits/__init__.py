"""Fit scaling laws to results tables: loss surfaces, isoFLOP analyses, backtests.

Pure numpy/scipy/lmfit/pandas; importing ``fits`` never imports torch.

>>> from fits import fit_loss_surface, load_fit, isoflop_analysis, backtest
"""
from ._data import InputError, budget_groups, surface_data
from .forms import FORMS, Form, chinchilla, chinchilla_allocation, data_constrained, get_form, kaplan, register_form
from .surface import LossSurfaceFit, fit_loss_surface, load_fit
from .isoflop import IsoflopResult, isoflop_analysis
from .backtest import BacktestResult, backtest

__version__ = "0.1.0"

__all__ = [
    "InputError",
    "budget_groups",
    "surface_data",
    "FORMS",
    "Form",
    "chinchilla",
    "chinchilla_allocation",
    "data_constrained",
    "get_form",
    "kaplan",
    "register_form",
    "LossSurfaceFit",
    "fit_loss_surface",
    "load_fit",
    "IsoflopResult",
    "isoflop_analysis",
    "BacktestResult",
    "backtest",
]
