"""What varies: declarative search-space files and their validated loader."""

from search_spaces.loader import SearchSpaceError, load_space, preset_names, resolve_space_path, space_yaml
from search_spaces.spec import DISTRIBUTIONS, ParamRule, ParamSpec, SearchSpace

__all__ = [
    "DISTRIBUTIONS",
    "ParamRule",
    "ParamSpec",
    "SearchSpace",
    "SearchSpaceError",
    "load_space",
    "preset_names",
    "resolve_space_path",
    "space_yaml",
]
