"""equisae: equivariant sparse autoencoders, and the companion to arXiv:2511.09432."""

import warnings
from importlib.metadata import version as _version

# Without ipywidgets, tqdm.auto falls back to the text bar inside Jupyter, and says so in a
# warning on every notebook; the text bar is what we want there.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = _version("equisae")
