#!/usr/bin/env python3
"""Tables of bench_grad_accuracy's JSON lines (stdin or files): one row per
(model, tolerance), one column per variant, each cell "rel error (NFE fwd/bwd)".
--variants A,B,... picks the columns (default: all that occur), --metric rel|maxabs."""
import json
import sys


def main(argv):
    variants, metric, files = None, "rel", []
    i = 0
    while i < len(argv):
        if argv[i] == "--variants":
            variants = argv[i + 1].split(",")
            i += 2
        elif argv[i] == "--metric":
            metric = argv[i + 1]
            i += 2
        else:
            files.append(argv[i])
            i += 1
    lines = []
    for f in files or ["-"]:
        src = sys.stdin if f == "-" else open(f)
        lines += [json.loads(l) for l in src if l.strip().startswith("{")]
    refs = [l for l in lines if l["bench"] == "grad_accuracy_ref"]
    rows = [l for l in lines if l["bench"] == "grad_accuracy"]
    for r in refs:
        print("reference %s (%s at %g, NFE %d/%d): backsolve differs by %.1e (max %.1e), "
              "Hermite one-RMS checkpoints by %.1e, dense-grp by %.1e" % (
                  r["label"], r["ref"], r["ref_tol"], r["nfe_fwd"], r["nfe_bwd"],
                  r["backsolve_rel"], r["backsolve_maxabs"], r["ckpt_rms_rel"],
                  r.get("dense_grp_rel", float("nan"))))
    if variants is None:
        variants = []
        for r in rows:
            if r["variant"] not in variants:
                variants.append(r["variant"])
    cells = {}
    keys = []
    for r in rows:
        k = (r["label"], r["tol"])
        if k not in keys:
            keys.append(k)
        cells[(k, r["variant"])] = r
    print("| model | tol | " + " | ".join(variants) + " |")
    print("|---" * (len(variants) + 2) + "|")
    for k in keys:
        out = []
        for v in variants:
            r = cells.get((k, v))
            out.append("" if r is None else "%.1e (%d/%d)" % (r[metric], r["nfe_fwd"], r["nfe_bwd"]))
        print("| %s | %g | %s |" % (k[0], k[1], " | ".join(out)))


main(sys.argv[1:])
