"""Published loss-surface fits shipped with the toolkit (``data/presets/*.json``)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fits._io import read_json
from fits.errors import InputError

__all__ = ["DEFAULT_PRESET", "preset_dir", "list_presets", "load_preset"]

DEFAULT_PRESET = "besiroglu2024"


def preset_dir() -> Path:
    """The installed copy (``planner/_presets`` in a wheel) or the repository's data/presets."""
    installed = Path(__file__).with_name("_presets")
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "data" / "presets"


def list_presets() -> list[dict]:
    """Name, title, form and citation of every preset.

    >>> "besiroglu2024" in [p["name"] for p in list_presets()]
    True
    """
    out = []
    for path in sorted(preset_dir().glob("*.json")):
        d = read_json(path, "preset")
        meta = d.get("preset", {})
        out.append({"name": path.stem, "title": meta.get("title", ""), "form": d.get("form"),
                    "citation": meta.get("citation", ""), "notes": meta.get("notes", "")})
    return out


@lru_cache(maxsize=None)
def load_preset(name: str):
    """Load a preset as a :class:`fits.LossSurfaceFit` (its citation in ``provenance['preset']``).

    >>> fit = load_preset("besiroglu2024")
    >>> fit.params["alpha"]
    0.3478
    """
    from fits.surface import LossSurfaceFit

    path = preset_dir() / f"{name}.json"
    if not path.is_file():
        names = [p.stem for p in sorted(preset_dir().glob("*.json"))]
        raise InputError(f"preset: must be one of {names}; got {name!r}")
    d = read_json(path, "preset")
    d["provenance"] = {**d.get("provenance", {}), "preset": {**d.get("preset", {}), "name": name}}
    return LossSurfaceFit.from_dict(d, source=f"preset {name!r}")
