"""``batchwise demo``, run: upload the bundled dataset, the seed comparison, the sweep with its
fit and recommendation, the plots — each step a request to the HTTP API. Progress goes to
stderr, the tables to stdout."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from service.client.demo.dataset import DemoDataset, make_dataset
from service.client.demo.embedded import embedded_service
from service.client.demo.plan import COMPARISON, FULL, QUICK, DemoPlan
from service.client.demo.report import (
    fit_text,
    job_error,
    jobs_line,
    last,
    noise_text,
    point_row,
    sweep_line,
)
from service.client.errors import BatchwiseAPIError, BatchwiseConnectionError, BatchwiseError
from service.client.formatting import figure, format_table, seconds
from service.client.http import BatchwiseClient
from service.client.progress import ProgressLine
from service.client.schemas import History, Job, Sweep

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130
PlotFormat = Literal["svg", "png"]


@dataclass
class _Demo:
    """One run: its four steps, each printing what it found, and what it submitted (to cancel
    on an interrupt)."""

    client: BatchwiseClient
    plan: DemoPlan
    dataset: DemoDataset
    out: Path
    fmt: PlotFormat
    stdout: TextIO
    progress: ProgressLine
    submitted_jobs: list[str]
    sweep_id: str | None = None

    def say(self, text: str = "") -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    # 1 -------------------------------------------------------------------------------------
    def upload(self) -> str:
        dataset = self.dataset
        self.say(f"Dataset: {dataset.describe()}.")
        stored = self.client.upload_dataset((dataset.X, dataset.y), name=dataset.name)
        self.say(
            f"Uploaded as {stored['id']} ({stored['n_rows']:,} rows × {stored['n_features']} "
            f"features, sha256 {stored['sha256'][:12]}…)."
        )
        return stored["id"]

    # 2 -------------------------------------------------------------------------------------
    def seed_comparison(self, dataset_id: str) -> list[Job]:
        lr = self.plan.comparison_lr
        self.say()
        self.say(
            "Seed comparison: "
            + " against ".join(f"batch {b} × {e} epochs" for b, e in COMPARISON)
            + f", learning rate {lr:g}, {self.plan.validation_split:.0%} held out for "
            "validation."
        )
        jobs = [
            self.client.submit_job(
                dataset_id,
                batch_size=batch_size,
                epochs=epochs,
                learning_rate=lr,
                validation_split=self.plan.validation_split,
                standardize=False,
                noise_scale=True,
                name=f"demo: batch {batch_size} × {epochs} epochs",
                tags=["demo", "seed-comparison"],
            )
            for batch_size, epochs in COMPARISON
        ]
        self.submitted_jobs += [job["id"] for job in jobs]
        finished = self.client.wait_for_jobs(
            [job["id"] for job in jobs],
            on_progress=lambda seen: self.progress.update(jobs_line(seen)),
        )
        self.progress.done()
        failed = [job for job in finished if job["status"] != "succeeded"]
        if failed:
            raise BatchwiseError(
                "; ".join(f"job {job['id']} {job['status']}: {job_error(job)}" for job in failed)
            )
        histories = [self.client.history(job["id"], max_points=2) for job in finished]
        self._print_comparison(finished, histories)
        return finished

    def _print_comparison(self, jobs: Sequence[Job], histories: Sequence[History]) -> None:
        headers = [
            "batch",
            "epochs",
            "lr",
            "steps",
            "samples",
            "final train",
            "final val",
            "wall time",
            "samples/s",
        ]
        rows = []
        for job, history in zip(jobs, histories, strict=True):
            rows.append(
                [
                    str(job["config"]["batch_size"]),
                    str(len(history["epoch"])),
                    f"{job['config']['learning_rate']:g}",
                    f"{history['total_steps']:,}",
                    f"{last(history['samples_seen']) or 0:,}",
                    figure(last(history["train_loss"])),
                    figure(last(history["val_loss"])),
                    seconds(last(history["wall_time_s"])),
                    figure(statistics.fmean(v for v in history["samples_per_s"] if v is not None)),
                ]
            )
        self.say(format_table(headers, rows))
        small, large = histories
        small_val, large_val = last(small["val_loss"]), last(large["val_loss"])
        if small_val is not None and large_val is not None:
            ratio = small["total_steps"] / max(large["total_steps"], 1)
            (b_small, e_small), (b_large, e_large) = COMPARISON
            self.say(
                f"Batch {b_large} × {e_large} epochs took {ratio:.3g}× fewer steps than batch "
                f"{b_small} × {e_small} epochs and ended at validation loss {large_val:.4g} "
                f"against {small_val:.4g}. Both ran at one learning rate; what a batch size "
                "costs when the rate is tuned for it is what the sweep measures."
            )

    # 3 -------------------------------------------------------------------------------------
    def sweep(self, dataset_id: str) -> Sweep:
        plan, noise_std = self.plan, self.dataset.noise_std
        batch_sizes = plan.batch_sizes
        self.say()
        self.say(
            f"Sweep over batch sizes {', '.join(map(str, batch_sizes))}: "
            f"{plan.describe(noise_std)}."
        )
        sweep = self.client.create_sweep(
            dataset_id,
            batch_sizes,
            name=f"demo: batch {batch_sizes[0]} to {batch_sizes[-1]}",
            base={
                "epochs": plan.sweep_epochs,
                "validation_split": plan.validation_split,
                "standardize": False,  # standardizing would undo the conditioning
                "noise_scale": True,
                "tags": ["demo"],
            },
            lr_search={"start": plan.lr_start, "max_rounds": plan.lr_max_rounds},
            # The noise is known, so the target is absolute: a fixed distance above the best
            # any model can do, the same for every batch size and every run of the demo.
            target_loss=plan.target_loss(noise_std),
            seeds=plan.seeds,
        )
        self.sweep_id = sweep["id"]
        started = time.monotonic()
        sweep = self.client.wait_for_sweep(
            sweep["id"],
            on_progress=lambda seen: self.progress.update(
                sweep_line(seen, time.monotonic() - started)
            ),
        )
        self.progress.done()
        if sweep["status"] != "succeeded":
            raise BatchwiseError(
                f"sweep {sweep['id']} {sweep['status']}: {sweep['error'] or 'no reason given'}"
            )
        self._print_sweep(sweep)
        return sweep

    def _print_sweep(self, sweep: Sweep) -> None:
        target = sweep["target"]
        self.say(f"Target: {target['on']} loss {figure(target['loss'])} — {target['description']}.")
        headers = [
            "batch",
            "lr",
            "final train",
            "final val",
            "steps→T",
            "samples→T",
            "epochs→T",
            "time→T",
            "samples/s",
        ]
        self.say(format_table(headers, [point_row(p) for p in sweep["points"]]))
        self.say(
            "lr: the rate searched for each batch size (* where the best lay at the edge of "
            "the rates tried); →T: to the target, interpolated, mean over seeds; — where "
            "not reached."
        )
        self.say(fit_text(sweep["fit"]))
        noise = noise_text(sweep.get("noise_scale_at_target"))
        if noise:
            self.say(noise)
        recommendation = sweep["recommendation"]
        if recommendation is not None:
            for key, label in (("fastest", "Fastest"), ("knee", "Knee")):
                choice = recommendation.get(key)
                if isinstance(choice, dict) and choice.get("reason"):
                    confidence = choice.get("confidence")
                    trust = f" (confidence: {confidence})" if confidence else ""
                    self.say(f"{label}{trust}: {choice['reason']}.")

    # 4 -------------------------------------------------------------------------------------
    def plots(self, jobs: Sequence[Job], sweep: Sweep) -> list[Path]:
        self.out.mkdir(parents=True, exist_ok=True)
        wanted: list[tuple[str, str, dict[str, str]]] = [
            (
                f"seed-batch{job['config']['batch_size']}-loss.{self.fmt}",
                f"/v1/jobs/{job['id']}/plots/loss.{self.fmt}",
                {},
            )
            for job in jobs
        ]
        base = f"/v1/sweeps/{sweep['id']}/plots"
        wanted += [
            (f"sweep-curves-{x}.{self.fmt}", f"{base}/curves.{self.fmt}", {"x": x})
            for x in ("step", "samples")
        ]
        wanted.append((f"sweep-scaling.{self.fmt}", f"{base}/scaling.{self.fmt}", {}))
        written: list[Path] = []
        self.say()
        for filename, path, params in wanted:
            try:
                image = self.client.get_plot(path, **params)
            except BatchwiseAPIError as exc:
                # A plot the service cannot draw (an older service without it: 404) is
                # reported and skipped: the analysis above already stands.
                self.say(f"Plot {filename} skipped: {exc}")
                continue
            target = self.out / filename
            target.write_bytes(image)
            written.append(target)
        self.say(f"Plots written to {self.out}: {', '.join(p.name for p in written) or 'none'}.")
        return written

    def cancel_unfinished(self) -> None:
        """Best effort after an interrupt: cancel what this run submitted."""
        try:
            if self.sweep_id is not None:
                self.client.cancel_sweep(self.sweep_id)
            for job_id in self.submitted_jobs:
                self.client.cancel_job(job_id)
        except BatchwiseError:
            pass  # finished already (409) or the service went away: nothing left to stop


def run_demo(
    *,
    url: str | None = None,
    out: Path = Path("batchwise-demo"),
    quick: bool = False,
    fmt: PlotFormat = "svg",
    data_dir: Path | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the demo (see :mod:`service.client.demo`); return the exit status: 0, 1 on an error
    (printed as one line to ``stderr``), 130 when interrupted."""
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    plan = QUICK if quick else FULL
    started = time.monotonic()
    demo: _Demo | None = None
    try:
        with ExitStack() as stack:
            if url is None:
                if data_dir is None:
                    scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="bw-demo-"))
                    data_dir = Path(scratch)
                stderr.write(f"Starting the embedded service (data in {data_dir}) …\n")
                url = stack.enter_context(embedded_service(data_dir))
                api_key: str | None = ""  # the embedded service runs with auth off
            else:
                api_key = None  # $BATCHWISE_API_KEY, read by the client
            client = stack.enter_context(BatchwiseClient(url, api_key=api_key))
            stdout.write(f"Batchwise demo{' (quick)' if quick else ''} against {url}\n")
            demo = _Demo(
                client=client,
                plan=plan,
                dataset=make_dataset(plan.n_rows),
                out=out,
                fmt=fmt,
                stdout=stdout,
                progress=ProgressLine(stderr),
                submitted_jobs=[],
            )
            try:
                dataset_id = demo.upload()
                jobs = demo.seed_comparison(dataset_id)
                sweep = demo.sweep(dataset_id)
                demo.plots(jobs, sweep)
            except KeyboardInterrupt:
                # Before the embedded service (if any) stops: a service at --url keeps
                # running, and should not keep training what nobody waits for.
                demo.progress.done()
                demo.cancel_unfinished()
                raise
            demo.say(f"Done in {time.monotonic() - started:.0f} s.")
    except KeyboardInterrupt:
        stderr.write("batchwise demo: interrupted; the jobs it submitted were cancelled\n")
        return EXIT_INTERRUPTED
    except BatchwiseConnectionError as exc:
        stderr.write(f"batchwise demo: error: {exc}\n")
        return EXIT_ERROR
    except BatchwiseError as exc:
        if demo is not None:
            demo.progress.done()
        stderr.write(f"batchwise demo: error: {exc}\n")
        return EXIT_ERROR
    return EXIT_OK
