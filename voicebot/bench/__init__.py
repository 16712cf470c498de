"""``voicebot bench``: speed and memory as measured facts, our code beside the raw libraries.

One run, one process (plus the child processes some sections need), the same inputs for both
sides of every comparison. One module per job:

    core         ``Plan`` (full or ``--quick``), time ``Budget``, percentiles, machine facts
    figures      ``TARGETS``: every figure with its label, unit and target; ``Report``
    inputs       real recordings (LibriVox), texts to speak, questions to ask
    asr          raw ``WhisperModel.transcribe`` vs ``Pipeline.transcribe``; load time, RSS
    tts          raw ``PiperVoice.synthesize`` vs ``SynthRouter.stream`` / ``Pipeline.speak``
    answers      ``Pipeline.ask`` latency over the dev questions, and their pass rate
    voice        voice turns end to end, alone and at rising concurrency
    serve        a child process built like ``serve``: peak RSS; then the WhatsApp load
    whatsapp     signed Twilio WhatsApp webhooks over loopback: ack, reply, throughput
    twilio       the webhook signer and the loopback fake Twilio REST API
    realtime     simulated Media Streams callers against ``CallSession``s
    runner       ``run_bench``: every section in order, each timed and guarded
    report       ``render_markdown`` → ``BENCHMARKS.md``;  plot: the PNG beside it

Every number lands in the flat ``figures`` list with its target (or a reference value from
``models.md``), which ``render_markdown`` turns into ``BENCHMARKS.md``. A section that cannot run
says why ("not measured: …") instead of disappearing; one that fails records its error and the
run goes on.
"""

from __future__ import annotations

from voicebot.bench.core import Budget, Plan, percentile
from voicebot.bench.figures import SCHEMA, TARGETS, Figure, Report, Spec, Target
from voicebot.bench.inputs import DEV_QUESTIONS, LIBRIVOX
from voicebot.bench.plot import plot_png, with_plot
from voicebot.bench.report import render_markdown
from voicebot.bench.runner import run_bench

__all__ = [
    "DEV_QUESTIONS",
    "LIBRIVOX",
    "SCHEMA",
    "TARGETS",
    "Budget",
    "Figure",
    "Plan",
    "Report",
    "Spec",
    "Target",
    "percentile",
    "plot_png",
    "render_markdown",
    "run_bench",
    "with_plot",
]
