"""Export a trial as a standalone Hugging Face model folder.

    python -m sentisweep.export --results results/quick --select best --out exported/quick-best

The folder holds the merged weights (safetensors; an adapter is merged into its base model),
the tokenizer, and a config whose id2label names the classes, so that
`transformers.pipeline("text-classification", model=DIR)` loads it with no sentisweep code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sentisweep import exit_codes
from sentisweep.layout import TRIAL_INFO_FILE
from sentisweep.predict import (
    SELECTION_METRIC,
    PredictError,
    add_selection_arguments,
    describe,
    load_selected,
)
from sentisweep.storage import is_remote, replaced_whole, umask_safetensors


def export(results: str, out: str | Path, select: str = "best", metric: str = SELECTION_METRIC,
           overwrite: bool = False) -> Path:
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise PredictError(f"--out = {str(target)!r}: a file, not a folder")
    source, written = Path(results).resolve(), target.resolve()
    if not is_remote(results) and (written == source or written in source.parents or source in written.parents):
        # --overwrite replaces --out whole: it must never hold, or be, what is exported from
        raise PredictError(f"--out = {str(target)!r}: it is, holds or lies inside --results ({str(results)!r}); "
                           "export to a folder of its own")
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise PredictError(f"--out = {str(target)!r} exists and is not empty; pass --overwrite to replace it")
    row, classifier = load_selected(results, select, metric)
    with replaced_whole(target, "staging") as staging:
        classifier.model.save_pretrained(staging)  # safetensors by default
        umask_safetensors(staging)
        truncation = classifier.info.get("truncation", "head")
        if truncation == "tail":  # the pipeline's tokenizer then keeps a long text's end, as the trial did
            classifier.tokenizer.truncation_side = "left"
        elif truncation == "head+tail":
            print(f"note: the trial kept the head and the tail of long texts; a transformers pipeline keeps "
                  f"only the first {classifier.max_length} tokens (sentisweep predict keeps both)", file=sys.stderr)
        classifier.tokenizer.save_pretrained(staging)
        provenance = {**classifier.info, "exported_from": str(row["checkpoint_path"]),
                      "test_accuracy": None if row["accuracy"] != row["accuracy"] else float(row["accuracy"])}
        (staging / TRIAL_INFO_FILE).write_text(json.dumps(provenance, indent=1))
    print(f"exported {describe(row)} -> {target}", file=sys.stderr)
    return target


@exit_codes.command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sentisweep.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_selection_arguments(p)
    p.add_argument("--out", required=True, help="the model folder to write")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    target = export(args.results, args.out, args.select, args.metric, args.overwrite)
    print(f'next, without sentisweep: transformers.pipeline("text-classification", model="{target}")',
          file=sys.stderr)
    return exit_codes.OK


if __name__ == "__main__":
    raise SystemExit(main())
