"""coolchic-ref: the normative integer-only decoder (NumPy + Numba, no torch).

    import coolchic_ref
    image = coolchic_ref.decode(open("image.cool", "rb").read())
    image.planes, image.bit_depth, image.color_format  # a ColorFormat (IntEnum)

Nothing here imports torch or the encoder (`coolchic_ref.encoder`, optional).
"""

from importlib.metadata import PackageNotFoundError, version

# Imported here, not through a lazy module __getattr__: the submodule is also
# called `decode`, and a lazy scheme would let `import coolchic_ref.decode`
# (done anywhere first) shadow the function with the module. The module itself
# is light: it imports the Numba kernels on the first call of decode().
from .decode import DecodedImage, decode
from .errors import StreamError
from .syntax import ColorFormat

try:
    __version__ = version("coolchic-ref")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["ColorFormat", "DecodedImage", "StreamError", "__version__", "decode"]
