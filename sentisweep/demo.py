"""A web page for the sweep's winner: type a review, see the label and its confidence.

    python -m sentisweep.demo --results results/quick                 # http://127.0.0.1:7860
    python -m sentisweep.demo --results results/quick --top-k 3       # the 3 best trials side by side

Gradio (rather than Streamlit): a function in, components out, `launch()` from Python on a
chosen host and port, and no script re-run per click, so the models load once. Loopback only
unless --host says otherwise. The page is an API too (the label's confidences, the answer, every
loaded trial's answer): gradio_client.Client(URL).predict(text, api_name="/classify").
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from sentisweep import exit_codes
from sentisweep.predict import (
    Classifier,
    PredictError,
    add_selection_arguments,
    describe,
    load_store,
    ranked_trials,
    select_trial,
    trial_cache_dir,
)

EXAMPLES = ["One of the best films I have seen in years: moving, funny and beautifully shot.",
            "Two hours of my life I will never get back. The plot made no sense at all."]


def load_trials(results: str, select: str, metric: str, top_k: int) -> list[tuple[pd.Series, Classifier]]:
    table = load_store(results)
    rows = [select_trial(table, select, metric)]  # "best" as predict says it: ties, a better row with no model
    rows += [row for _, row in ranked_trials(table, metric).iterrows() if row["trial_id"] != rows[0]["trial_id"]]
    chosen = rows[:top_k]
    print(f"loading {len(chosen)} trial(s): " + "; ".join(describe(r) for r in chosen), file=sys.stderr, flush=True)
    return [(row, Classifier(row["checkpoint_path"], trial_cache_dir(row))) for row in chosen]


def classify(trials: list[tuple[pd.Series, Classifier]], text: str) -> tuple[dict, str, pd.DataFrame]:
    """The first trial's answer (label -> confidence), who answered, and every trial's answer."""
    if not text or not text.strip():
        return {}, "Type a review first.", pd.DataFrame()
    answers = []
    for row, classifier in trials:
        probabilities = classifier.probabilities([text])[0]
        answers.append((row, {name.upper(): float(p) for name, p in zip(classifier.label_names, probabilities,
                                                                        strict=True)}))
    row, confidences = answers[0]
    label = max(confidences, key=confidences.get)
    answered_by = (f"**{label}** ({confidences[label]:.1%}), answered by {describe(row)}.")
    table = pd.DataFrame([{"trial": r["trial_id"], "model": r["model"], "method": r["method"],
                           "test accuracy": round(float(r["accuracy"]), 4),
                           "label": max(c, key=c.get), "confidence": round(max(c.values()), 4)}
                          for r, c in answers])
    return confidences, answered_by, table


def build_app(trials: list[tuple[pd.Series, Classifier]]):
    import gradio as gr

    best = trials[0][0]
    with gr.Blocks(title="sentisweep demo") as app:
        gr.Markdown(f"## Sentiment, by the sweep's winner\nThe {describe(best)}.")
        text = gr.Textbox(label="Review", lines=5, placeholder="Type a movie review ...", elem_id="review")
        button = gr.Button("Classify", variant="primary", elem_id="classify")
        label = gr.Label(label="Label", num_top_classes=len(trials[0][1].label_names), elem_id="label")
        answered_by = gr.Markdown(elem_id="answered-by")
        others = gr.Dataframe(label="Every loaded trial on the same text", visible=len(trials) > 1, elem_id="trials")
        inputs, outputs = [text], [label, answered_by, others]
        # One event for the button and Enter, so the page's API has one endpoint by name:
        # gradio_client.Client(URL).predict(text, api_name="/classify")
        gr.on([button.click, text.submit], lambda t: classify(trials, t), inputs, outputs, api_name="classify")
        gr.Examples(EXAMPLES, inputs=text)
    return app


@exit_codes.command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sentisweep.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_selection_arguments(p)
    p.add_argument("--top-k", type=int, default=1, help="also load the next best trials and show their answers")
    p.add_argument("--host", default="127.0.0.1", help="default loopback; 0.0.0.0 serves every interface")
    p.add_argument("--port", type=int, default=7860)
    args = p.parse_args(argv)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise PredictError("the demo needs Gradio: pip install 'sentisweep[demo]'") from None
    if args.top_k < 1:
        raise PredictError(f"--top-k = {args.top_k}: must be at least 1")
    trials = load_trials(args.results, args.select, args.metric, args.top_k)
    print(f"demo on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    build_app(trials).launch(server_name=args.host, server_port=args.port, show_error=True)
    return exit_codes.OK


if __name__ == "__main__":
    raise SystemExit(main())
