"""`uniqa app`'s two speed targets on this machine (issue #26), with the shipped UniQA-Tiny:

1. first page: from starting `uniqa app` to its first page served (target: under 10 s);
2. 20 uploaded 1024x768 JPEGs scored and ranked, through the app's HTTP API as the page sends
   them (upload + batched scoring + ranked table), against `uniqa score` on the same files
   (the whole command, as a user runs it) (target: under 2x).

    python benchmarks/bench_app.py [--images 20] [--repeats 3] [--model DIR]

Also printed: the app's in-process scoring time (`QualityApp.score` + table), without HTTP and
uploads.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_photos(folder: str, count: int, size=(1024, 768)) -> list:
    """JPEGs with smooth structure and some noise (about the size of real photos at quality 90)."""
    rng = np.random.default_rng(0)
    paths = []
    for number in range(count):
        y, x = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float32)
        base = 127 + 60 * np.sin(x / (30 + 5 * number)) * np.cos(y / (45 + 3 * number))
        rgb = np.stack([base, np.roll(base, 40, axis=1), 255 - base], axis=-1) + rng.normal(0, 4 + number, (size[1], size[0], 3))
        path = os.path.join(folder, f"photo-{number:02d}.jpg")
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def environment() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
            "PYTHONPATH": os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")]))}


def start_app(model: str | None, port: int) -> tuple:
    """Start `uniqa app` as the console script does; returns `(process, seconds until the first page was served)`."""
    command = [sys.executable, "-m", "uniqa_app.command", "app", "--port", str(port)] + (["--model", model] if model else [])
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"uniqa app exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return process, time.perf_counter() - start
        except OSError:
            time.sleep(0.05)
        if time.perf_counter() - start > 120:
            process.kill()
            raise RuntimeError("uniqa app served nothing within 120 s")


def stop(process) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def time_uniqa_score(folder: str, model: str | None, output: str) -> float:
    command = [sys.executable, "-m", "uniqa_app.command", "score", folder, "--output", output, "--overwrite"] + (["--model", model] if model else [])
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO_ROOT, env=environment(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None, help="Model folder (default: UniQA-Tiny)")
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    print(f"CPU cores: {os.cpu_count()}; torch threads default; model: {args.model or 'UniQA-Tiny (shipped)'}")
    with tempfile.TemporaryDirectory() as work:
        folder = os.path.join(work, "photos")
        os.makedirs(folder)
        paths = write_photos(folder, args.images)
        print(f"{len(paths)} JPEGs 1024x768, {sum(map(os.path.getsize, paths)) / 1e6:.1f} MB")

        first_pages, app_times = [], []
        for _ in range(args.repeats):
            process, seconds = start_app(args.model, free_port())
            first_pages.append(seconds)
            stop(process)
        print(f"first page after start:        median {statistics.median(first_pages):6.2f} s  (runs: {', '.join(f'{s:.2f}' for s in first_pages)}; target < 10 s)")

        process, _ = start_app(args.model, port := free_port())
        try:
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            client.predict([handle_file(paths[0])], api_name="/on_files")  # warm-up: one image
            for _ in range(args.repeats):
                start = time.perf_counter()
                table, status, *_ = client.predict([handle_file(path) for path in paths], api_name="/on_files")
                app_times.append(time.perf_counter() - start)
                assert table.count('class="uniqa-row"') == len(paths), status
        finally:
            stop(process)

        score_times = [time_uniqa_score(folder, args.model, os.path.join(work, "scores.csv")) for _ in range(args.repeats)]

        sys.path.insert(0, REPO_ROOT)
        from modeling_uniqa import DEFAULT_MODEL
        from modeling_uniqa.app.gradio_app import QualityApp

        app = QualityApp(args.model or DEFAULT_MODEL)
        app.score(paths[:1])
        in_process = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            app.table_html(app.score(paths))
            in_process.append(time.perf_counter() - start)

    app_median, score_median = statistics.median(app_times), statistics.median(score_times)
    print(f"app, upload + score + rank:    median {app_median:6.2f} s  (runs: {', '.join(f'{s:.2f}' for s in app_times)})")
    print(f"uniqa score, whole command:    median {score_median:6.2f} s  (runs: {', '.join(f'{s:.2f}' for s in score_times)})")
    print(f"ratio app / uniqa score:       {app_median / score_median:6.2f}x  (target < 2x)")
    print(f"app in-process score + table:  median {statistics.median(in_process):6.2f} s")


if __name__ == "__main__":
    main()
