"""4:2:0 chroma reduction (spec 8.1) as a Numba kernel, on the decoder's one wrap32."""

from __future__ import annotations

import numpy as np
from numba import njit

from .layer_kernels import wrap32


@njit(cache=True)
def reduce_chroma_420(plane: np.ndarray) -> np.ndarray:
    """2x2 average of an int32 Q12 plane (H, W) -> int32 (ceil(H/2), ceil(W/2)), spec 8.1.

    The last row / column is repeated for odd sizes; the sum wraps to int32 and
    the result is rounded half up: wrap32(a + b + c + d + 2) >> 2.
    """
    height, width = plane.shape
    out = np.empty(((height + 1) // 2, (width + 1) // 2), dtype=np.int32)
    for y in range(out.shape[0]):
        top = plane[2 * y]
        bottom = plane[min(2 * y + 1, height - 1)]
        for x in range(out.shape[1]):
            x0 = 2 * x
            x1 = min(x0 + 1, width - 1)
            total = np.int64(top[x0]) + top[x1] + bottom[x0] + bottom[x1] + 2
            out[y, x] = np.int64(wrap32(total)) >> 2
    return out
