"""vlgenrm: train and serve vision-language generative reward models (VL-GenRM).

The core library: typed contracts, transports (Bus, BlobStore), settings and the method.
Services, the operator and the CLI are thin shells over it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vlgenrm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
