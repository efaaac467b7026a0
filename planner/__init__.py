"""Turn a scaling-law fit (or a published preset) and a budget into a training plan.

Never imports torch; the ``plan`` command answers in well under a second.

>>> from planner import make_plan
>>> make_plan(budget=1e21).shape.n_layers > 0
True
"""
from scaling_core.budget import Budget
from scaling_core.hardware import ACCELERATORS, get_accelerator
from .plan import Plan, make_plan, make_plans, plans_to_frame
from fits.presets import list_presets, load_preset
from scaling_core.shape import ModelShape, shape_for_params

__all__ = [
    "Budget", "ACCELERATORS", "get_accelerator", "Plan", "make_plan", "make_plans", "plans_to_frame",
    "list_presets", "load_preset", "ModelShape", "shape_for_params",
]
