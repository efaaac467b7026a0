"""Published loss-surface fits shipped with the toolkit (``data/presets/*.json``), and
:func:`resolve_fit`: a fit from a fit, a preset name or a fit JSON path."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from scaling_core.io import read_json
from .errors import InputError

__all__ = ["DEFAULT_PRESET", "preset_dir", "list_presets", "load_preset", "resolve_fit"]

DEFAULT_PRESET = "besiroglu2024"


def preset_dir() -> Path:
    """The installed copy (``fits/_presets`` in a wheel) or the repository's data/presets."""
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
    from .surface import LossSurfaceFit

    path = preset_dir() / f"{name}.json"
    if not path.is_file():
        names = [p.stem for p in sorted(preset_dir().glob("*.json"))]
        raise InputError(f"preset: must be one of {names}; got {name!r}")
    d = read_json(path, "preset")
    d["provenance"] = {**d.get("provenance", {}), "preset": {**d.get("preset", {}), "name": name}}
    return LossSurfaceFit.from_dict(d, source=f"preset {name!r}")


def resolve_fit(source=None):
    """A fit from a LossSurfaceFit, a preset name, or a path to a fit JSON (default: the default preset)."""
    if source is None:
        return load_preset(DEFAULT_PRESET)
    if isinstance(source, (str, Path)) and (str(source).endswith(".json") or Path(source).is_file()):
        from .surface import load_fit

        return load_fit(source)
    if isinstance(source, str):
        return load_preset(source)
    if hasattr(source, "allocation") and hasattr(source, "params"):
        return source
    raise InputError(f"fit: expected a fit, a preset name or a fit JSON path; got {type(source).__name__}")
