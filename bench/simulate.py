"""Throughput of the embedded-data simulation (slices per second) at each profile's size.

Usage: python bench/simulate.py [--profiles cpu gpu] [--subjects 4]

Times ``generate_subject`` (anatomy rendering, coil maps, k-space with noise) and the
HDF5 write separately. Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mrilib.config import get_profile
from mrilib.data import generate_subject, write_volume
from mrilib.data.brain import load_template


def bench(profile: str, subjects: int) -> dict:
    """Simulate and write ``subjects`` subjects at ``profile``'s size; return timings."""
    p = get_profile(profile)
    load_template()  # exclude the one-off template load
    t_sim = t_write = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(subjects):
            t0 = time.perf_counter()
            sim = generate_subject(1000 + i, image_size=p.data.image_size, num_slices=p.data.slices_per_subject,
                                   num_coils=p.data.num_coils, snr=p.data.snr, contrasts=p.data.contrasts, fov_mm=p.data.fov_mm)
            t1 = time.perf_counter()
            write_volume(Path(tmp) / f"{i}.h5", sim["kspace"], patient_id=str(i), acquisition="AX",
                         extras={"image": sim["image"], "sens_maps": sim["sens_maps"]})
            t_write += time.perf_counter() - t1
            t_sim += t1 - t0
    n = subjects * p.data.slices_per_subject
    return dict(profile=profile, size=f"{p.data.image_size}²x{p.data.num_coils} coils", slices=n,
                sim_slices_per_s=n / t_sim, total_slices_per_s=n / (t_sim + t_write))


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", nargs="+", default=["cpu", "gpu"])
    ap.add_argument("--subjects", type=int, default=4)
    args = ap.parse_args()
    load_t0 = time.perf_counter()
    load_template()
    print(f"template load: {time.perf_counter() - load_t0:.2f} s (once per process)")
    print(f"{'profile':8} {'size':22} {'slices':>6} {'simulate sl/s':>14} {'+write sl/s':>12}")
    for prof in args.profiles:
        r = bench(prof, args.subjects)
        print(f"{r['profile']:8} {r['size']:22} {r['slices']:6d} {r['sim_slices_per_s']:14.1f} {r['total_slices_per_s']:12.1f}")


if __name__ == "__main__":
    main()
