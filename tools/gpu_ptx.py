"""Compile every device kernel to PTX for a given compute capability, without a GPU.

``make gpu-ptx`` runs this. numba.cuda's ``compile_ptx`` types and lowers each kernel of
:mod:`mmsb.device.kernels` with the argument types the host code passes
(``kernels.SIGNATURES``) and hands the IR to NVVM, so typing and code generation errors
that the CUDA simulator cannot see (it runs the Python source) fail here. It needs NVVM
and libdevice, which come with the CUDA toolkit wheels of ``pip install 'numba-cuda[cu12]'``
(the ``mmsb[gpu]`` extra); no driver and no device.

Two properties are checked in the PTX itself, for the propagation kernel: no fused
multiply-add (``fma.``), since the host computes ``a + w * x`` with two roundings and a
fused one would make device pages differ from host pages in the last bit; and no widening
of float32 to float64 (``cvt.f64.f32``), which a variable shared by the float32 and
float64 paths would bring in (numba unifies its type) and the simulator would not show.

Usage: ``python tools/gpu_ptx.py [--cc 9.0] [--out DIR]``; exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

EXACT = ("prop_level",)  # kernels whose float results must match the host bit for bit


def _cc(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cc", type=_cc, default=(9, 0), help="compute capability (9.0)")
    parser.add_argument("--out", type=Path, default=None, help="write NAME.ptx files here")
    args = parser.parse_args(argv)
    if os.environ.pop("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        print("note: NUMBA_ENABLE_CUDASIM ignored: PTX is compiled for the real target")
    try:
        cuda: Any = importlib.import_module("numba.cuda")
        from mmsb.device import kernels
    except ImportError as exc:
        print(f"cannot import numba.cuda ({exc}); install: pip install 'numba-cuda[cu12]'")
        return 1
    if kernels.SIMULATOR:
        print("numba.cuda was loaded as the simulator; run in a fresh process")
        return 1
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    cc = args.cc
    print(f"compiling {len(kernels.SIGNATURES)} kernels to PTX for sm_{cc[0]}{cc[1]}")
    for name, (fn, sig) in kernels.SIGNATURES.items():
        t0 = time.perf_counter()
        try:
            ptx, _ = cuda.compile_ptx(fn, sig, cc=cc)
        except Exception as exc:  # typing, lowering or NVVM errors: report all, then fail
            text = f"{type(exc).__name__}: {exc}"
            if any(w in text.lower() for w in ("nvvm", "nvrtc", "dynamiclibnotfound")):
                print(f"  FAIL {name}: the CUDA compiler libraries are missing ({text.strip()})")
                print("PTX: install them with: pip install 'numba-cuda[cu12]'")
                return 1
            failed += 1
            print(f"  FAIL {name}: {text.strip().splitlines()[0]}")
            continue
        ms = 1000 * (time.perf_counter() - t0)
        lines = ptx.count("\n")
        fused = len(re.findall(r"^\s*fma\.", ptx, re.MULTILINE))
        widened = ptx.count("cvt.f64.f32")
        note = ""
        if name in EXACT and (fused or widened):
            failed += 1
            note = f"  FAIL: {fused} fused multiply-adds, {widened} float32 widenings"
        print(
            f"  {'FAIL' if note else 'ok  '} {name}: {lines} PTX lines, {fused} fma, "
            f"{widened} f32->f64, {ms:.0f} ms{note}"
        )
        if args.out is not None:
            (args.out / f"{name}.ptx").write_text(ptx)
    print("PTX: all kernels compiled" if not failed else f"PTX: {failed} failure(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
