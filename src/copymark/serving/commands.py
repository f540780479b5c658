"""CLI commands of this package (registered by copymark.cli): ``copymark serve``."""

from __future__ import annotations

from pathlib import Path

import typer

SERVE_HELP = """Serve a model behind the budgeted, rate-limited inference API: an image -> image
model (`--victim`, answered at `POST /v1/translate`) or a classifier (`--classifier`, answered at
`POST /v1/classify`). The API (every endpoint, header, status and error code, the metrics, the
usage ledger and the keys file) is documented in docs/API.md; `GET /openapi.json` is its schema.

**Models** (`--victim`): `classical:stylize`, `classical:edge_preserving`, `classical:cartoon`,
`classical:bicubic_x4` (with `?param=value` options); a copymark checkpoint folder or training
run folder; a TorchScript file (`.pt`, `.ts`); `python:PKG.MODULE:FACTORY --weights FILE`,
a factory (importable: installed or on PYTHONPATH) that returns an `nn.Module`, whose state dict
FILE (`.safetensors`, or a `torch.save` state dict read with `weights_only=True`) must match
its keys exactly; or `onnx:PATH?OPTIONS`, an ONNX graph run by onnxruntime (below).

**ONNX graphs** (`--victim onnx:model.onnx`): onnxruntime's CPU provider, or its CUDA provider
with `--device cuda` (needs onnxruntime-gpu; never a silent CPU fallback). The layout (NCHW or
NHWC: the axis fixed at 3), the element type (float32, float16: inputs cast at the edge), a
fixed batch (a batch-1 graph is fed one image at a time) and a fixed size come from the
graph's input and output shapes; the stride and scale are probed. What the graph cannot show
is declared as spec options,
`onnx:PATH?layout=NHWC&value_range=-1,1&color_order=BGR&scale=4&stride=8&fixed_size=HxW&batch=1&output=NAME`
(`value_range` 0,1 (default) / -1,1 / 0,255;
`color_order` RGB (default) / BGR; `output` picks one of several outputs, default the first),
or in a JSON sidecar `PATH.json` beside the graph (`model.onnx.json`) with the same keys, e.g.
`{"value_range": [-1, 1], "fixed_size": [256, 256]}`. Two sources that disagree, a declaration
the graph contradicts, a graph with more than one input, an input or output that is not an
RGB image batch, or a scale that the probe forward pass contradicts, is an error before
anything is served. The victim id hashes the graph file and the resolved convention.
Example: AnimeGANv3 (NHWC, float16, batch 1, [-1, 1]):
`copymark serve --victim "onnx:AnimeGANv3_JP_face_v1.0_fp16.onnx?value_range=-1,1" --keys keys.json`.

**Classifiers** (`--classifier`): a copymark checkpoint folder of a classifier, a run folder of
`copymark classifier train`, or `python:PKG.MODULE:FACTORY?input_size=32 --weights FILE`. The
net gets float32 `N x 3 x H x W` RGB in [0, 1] at exactly its input size (from its config, its
`input_size` attribute, the spec option or `--input-size`) and returns `N x K` logits; the server computes the
softmax in float64. Images of any other size are refused (422 `wrong_input_size`), never
resized. Class names (optional) come from `--class-names FILE` (JSON list or one per line), else
the checkpoint's config or provenance, else the module's `class_names`. `--answer label` hides
the scores (answers carry the label only); `--answer topk` (default) adds the `top_k` most
probable classes with their probabilities (`?top_k=N`, default 5).

**Tensor contract** (`--victim`). Checkpoints and TorchScript nets get float32 `N x 3 x H x W`,
RGB, values in [0, 1], and must return `N x 3 x (H*scale) x (W*scale)` RGB in [0, 1]. A
`python:` module declares its convention as attributes (`value_range` (0, 1) / (-1, 1) /
(0, 255), `color_order` "RGB" / "BGR", `scale`, `stride`, `fixed_size`) or spec options
(`?value_range=-1,1&color_order=BGR&scale=4&stride=4`); copymark converts to it and back, and an
option that contradicts the module is an error. An `onnx:` graph gets its own convention (above). Sizes that are not a multiple of the net's
stride are reflect-padded up to the next multiple and the answer is cropped back to
`H*scale x W*scale`; fixed-size nets run in overlapping tiles.

**Trust.** TorchScript files are programs: serve only files from a trusted source (copymark
checks the archive's CRCs and refuses a damaged or tampered file, but cannot tell whose code a
well-formed one is). A `python:` module is code you install or read. copymark recommends
`python:` with a safetensors state dict (weights are data, the architecture is readable
source), or an ONNX graph (standard operators and weights, no code of its own); torch.jit is
deprecated upstream.

**Isolation** (`--isolation`, default `auto` = `worker`): the model runs in a supervised worker
process rebuilt from the spec, so a crash or hang in its native code answers the affected
requests with a 5xx JSON error (never charged), the worker restarts, and the server keeps
serving. `inline` runs it in the server process (no copy, no restart; a crash kills the
server).

**Limits**, checked from the image header before decoding: `--max-pixels` (413), `--min-side`,
`--max-aspect` (422). Endpoints: the model's route, `/v1/usage` (a key's own budget),
`/v1/info`, `/v1/health`, `/metrics`, `/openapi.json`; `/docs` (Swagger UI) only with `--docs`.
"""


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``."""

    @app.command("serve", help=SERVE_HELP)
    def serve(
        victim: str | None = typer.Option(
            None,
            "--victim",
            help="image model SPEC: classical:NAME?PARAMS, a checkpoint or run folder, a TorchScript file "
            "(trusted sources only: it is code), python:PKG.MODULE:FACTORY with --weights, or "
            "onnx:PATH?OPTIONS (an ONNX graph; see above)",
        ),
        classifier: str | None = typer.Option(
            None,
            "--classifier",
            help="classifier SPEC: a checkpoint or run folder of a classifier, or "
            "python:PKG.MODULE:FACTORY?input_size=N with --weights (returns N x K logits)",
        ),
        weights: Path | None = typer.Option(
            None, "--weights", help="state dict for a python: model (.safetensors, or torch.save with weights_only)"
        ),
        class_names: Path | None = typer.Option(
            None, "--class-names", help="classifiers: names of the classes, a JSON list or one per line (index = label)"
        ),
        input_size: str | None = typer.Option(
            None,
            "--input-size",
            help="classifiers: the input size N or HxW, for nets that declare none (e.g. steganalyzers)",
        ),
        answer: str = typer.Option(
            "topk", "--answer", help="classifiers: topk (label + top-k probabilities) | label (the label only)"
        ),
        docs: bool = typer.Option(
            False, "--docs", help="serve Swagger UI at /docs (its page loads Swagger's JavaScript from a CDN)"
        ),
        keys: Path = typer.Option(
            ..., "--keys", help='JSON keys file {"KEY": {"budget": N, "rate_per_s": R, "burst": B}}'
        ),
        host: str = typer.Option("127.0.0.1", "--host"),
        port: int = typer.Option(8000, "--port"),
        device: str = typer.Option(
            "cpu", "--device", help="device for learned victims (cpu, cuda; onnx: graphs: onnxruntime's CUDA provider)"
        ),
        isolation: str = typer.Option(
            "auto", "--isolation", help="auto | worker | inline: where the model runs (see above)"
        ),
        usage_db: Path | None = typer.Option(
            None, "--usage-db", help="SQLite file of spent budgets (default: beside the keys file)"
        ),
        max_upload_bytes: int = typer.Option(8 * 1024 * 1024, "--max-upload-bytes"),
        max_pixels: int = typer.Option(1024 * 1024, "--max-pixels", help="input width*height limit (413)"),
        min_side: int = typer.Option(8, "--min-side", help="shortest input side in pixels (422)"),
        max_aspect: float = typer.Option(16.0, "--max-aspect", help="longest/shortest input side (422)"),
        max_batch: int = typer.Option(8, "--max-batch"),
        max_wait_ms: float = typer.Option(5.0, "--max-wait-ms"),
        queue_size: int = typer.Option(64, "--queue-size"),
        inference_timeout_s: float = typer.Option(
            60.0, "--inference-timeout", help="seconds a batch may run before 504 (the worker is then restarted)"
        ),
        request_log: Path | None = typer.Option(None, "--request-log", help="JSON-lines audit log of requests"),
        idempotency_cache: int = typer.Option(
            256, "--idempotency-cache", help="answers kept per key for Idempotency-Key replays (0: off)"
        ),
        log_level: str = typer.Option("info", "--log-level"),
        threads: int = typer.Option(0, "--threads", help="torch intra-op threads (0: torch's default)"),
    ) -> None:
        from dataclasses import replace

        from copymark.config import parse_config
        from copymark.errors import ConfigError
        from copymark.serving.app import create_app, start_model
        from copymark.serving.classifiers import load_classifier, parse_input_size
        from copymark.serving.models import load_model
        from copymark.serving.server import serve_forever
        from copymark.serving.settings import ServeSettings

        if answer not in ("topk", "label"):
            raise ConfigError(f"--answer must be topk or label, got {answer!r}")
        settings = parse_config(
            ServeSettings,
            {
                "keys_file": keys,
                "usage_db": usage_db,
                "max_upload_bytes": max_upload_bytes,
                "max_pixels": max_pixels,
                "min_side": min_side,
                "max_aspect": max_aspect,
                "max_batch": max_batch,
                "max_wait_ms": max_wait_ms,
                "queue_size": queue_size,
                "inference_timeout_s": inference_timeout_s,
                "request_log": request_log,
                "idempotency_cache": idempotency_cache,
                "isolation": isolation,
                "classify_answer": answer,
                "docs": docs,
            },
            where="serve options",
        )
        if (victim is None) == (classifier is None):
            raise ConfigError(
                "give exactly one of --victim SPEC (an image model) and --classifier SPEC (a classifier)",
                hint="see `copymark serve --help` and docs/API.md",
            )
        if victim is not None and (class_names is not None or answer != "topk" or input_size is not None):
            raise ConfigError("--class-names, --input-size and --answer are for --classifier, not --victim")
        size = parse_input_size(input_size, "--input-size") if input_size is not None else None
        if threads < 0:
            raise ConfigError(f"--threads must be >= 0, got {threads}")
        if threads:
            import torch

            torch.set_num_threads(threads)
        # with a worker, this process only needs the model's metadata: keep it off the accelerator
        worker = settings.isolation != "inline"
        here = "cpu" if worker else device
        if classifier is not None:
            v = load_classifier(classifier, here, weights, class_names, size)
        else:
            assert victim is not None
            v = load_model(victim, here, weights)
        if worker and v.source is not None:
            v.source = replace(v.source, device=device)
        app_ = create_app(v, settings)
        start_model(app_)
        what = "classifier" if classifier is not None else "victim"
        typer.echo(f"serving {what} {v.id} (task {v.task}) on http://{host}:{port}", err=True)
        serve_forever(app_, host, port, log_level)
