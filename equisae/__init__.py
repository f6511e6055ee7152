"""equisae: equivariant sparse autoencoders, and the companion to arXiv:2511.09432."""

import warnings
from importlib.metadata import version as _version

# Without ipywidgets, tqdm.auto falls back to the text bar inside Jupyter, and says so in a
# warning on every notebook; the text bar is what we want there.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = _version("equisae")

# The one-call entry point (``equisae.study(model, layers, images=...)``); imported last so that
# the name is the function, not the submodule ``equisae.study`` (which stays importable).
from equisae.study import study  # noqa: E402

__all__ = ["__version__", "study"]
