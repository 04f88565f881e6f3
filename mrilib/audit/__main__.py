"""Command line: check that every label of a fastMRI-layout folder agrees with its own k-space.

``python -m mrilib.audit DATA_DIR [--json OUT] [--threshold T] [--sigma S]`` scores every
slice (:func:`mrilib.audit.label_score`), prints one line per file or slice that could not
be checked (on stderr, naming the file), then a summary with every flagged slice, and
writes ``{"slices": [{"file", "slice", "score", "flagged"}, …], "errors": […], …summary}``
to ``OUT`` atomically. Exit status: 0 when at least one slice was checked (flagged or
not), 1 when nothing could be checked (no ``.h5`` volume, or none readable), 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import sys

from mrilib.audit import DEFAULT_SIGMA, DEFAULT_THRESHOLD, AuditError, audit_folder


def main(argv=None) -> int:
    """Run the audit on ``argv`` (default: the command line); return the exit status."""
    ap = argparse.ArgumentParser(
        prog="python -m mrilib.audit",
        description="Flag the slices of a fastMRI-layout folder whose label (reconstruction_rss) departs from "
                    "the root-sum-of-squares image of its own k-space.")
    ap.add_argument("data_dir", help="folder of .h5 volumes (e.g. multicoil_train); hidden and .tmp files skipped")
    ap.add_argument("--json", metavar="OUT", help="write every slice's score and the summary to this JSON file")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                    help=f"flag a slice whose score (share of the label's maximum) exceeds this "
                         f"(default {DEFAULT_THRESHOLD:g}: float rounding stays below ~1e-6, edits reach 1e-2)")
    ap.add_argument("--all-labels", action="store_true",
                    help="also score volumes whose labels are declared not to be the RSS of their k-space "
                         "(attribute label_source, e.g. M4RAW's averaged repetitions); by default they are reported "
                         "as not auditable")
    ap.add_argument("--sigma", type=float, default=DEFAULT_SIGMA,
                    help=f"Gaussian low-pass width in pixels before scoring (default {DEFAULT_SIGMA:g}: none, the most "
                         "sensitive; chapter 5's label check uses 2)")
    args = ap.parse_args(argv)
    try:
        result = audit_folder(args.data_dir, threshold=args.threshold, sigma=args.sigma, all_labels=args.all_labels)
    except AuditError as err:
        ap.error(str(err))
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for e in result.errors:
        print(f"error: {result.data_dir / e['file']}: {e['error']}", file=sys.stderr)
    print(result.report())
    if args.json:
        print(f"wrote {result.write_json(args.json)}")
    return 0 if result.checked else 1


if __name__ == "__main__":
    sys.exit(main())
