"""Scoring a zarr store on a dask cluster against the single-process `lensclf predict`, on one node.

Builds a store of N simulated 3x64x64 cutouts (``bench_predict_store.grow_store``: --k packed files
repeated chunk-aligned), trains a model briefly (its weights do not change the cost), then times, each
in a fresh process with its peak RSS:

- ``lensclf predict MODEL store.zarr --out single.csv``              (single process, 2 torch threads)
- ``lensclf predict ... --scheduler ADDRESS`` on LocalClusters of 1 worker x 2 threads and
  2 workers x 1 thread (started here, outside the timed command, as a cluster would be);
- the time to resume: the cluster run killed (SIGKILL of the command) once half the blocks are done,
  then rerun; the rerun's wall time and the blocks it skipped.

Peak memory per worker is read from the workers themselves (``resource.getrusage`` in each worker
process after the run), for each N in ``--n``. Starting a LocalCluster leaves the nanny's worker
environment (``OMP_NUM_THREADS=1``, ``MALLOC_TRIM_THRESHOLD_=65536``) in this process's ``os.environ``;
``lensclf._cluster.local_cluster`` puts it back, or the next single-process command would run on one torch thread.

    python benchmarks/bench_cluster.py --n 20000 200000 --out benchmarks/results/cluster.json
    python benchmarks/bench_cluster.py --n 1000000 --configs 2x1 --resume-n --no-single   # memory at 10^6
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import zarr

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _harness import emit_json  # noqa: E402
from bench_predict_store import grow_store, measured, model_and_files  # noqa: E402

from lensclf._cluster import local_cluster  # noqa: E402


def _worker_peak_mib():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--k", type=int, default=2_000)
    parser.add_argument("--configs", nargs="+", default=["1x2", "2x1"], help="WORKERSxTHREADS LocalClusters")
    parser.add_argument("--resume-n", type=int, nargs="*", default=None,
                        help="the N at which the kill-and-resume run is timed (default: every N; none: skip)")
    parser.add_argument("--no-single", action="store_true",
                        help="skip the single-process command (a memory point: the clusters' rows have no vs_single)")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs]
    resume_n = args.n if args.resume_n is None else args.resume_n
    work = tempfile.mkdtemp(prefix="bench-cluster-", dir=args.dir)
    lensclf = [sys.executable, "-m", "lensclf"]
    try:
        model, files, _ = model_and_files(work, args.k)
        result = {"k_files": args.k, "cpus": len(os.sched_getaffinity(0)), "runs": []}
        for n in args.n:
            store = os.path.join(work, f"s{n}.zarr")
            subprocess.run([*lensclf, "pack", files, "--out", store, "--quiet"], check=True)
            grow_store(store, n)
            row = {"n": n}
            single = None
            if not args.no_single:
                single, _ = measured([*lensclf, "predict", model, store, "--out", os.path.join(work, "single.csv"),
                                      "--quiet", "--overwrite"])
                row["single_process"] = {"wall_s": round(single["wall_s"], 1),
                                         "images_per_s": round(n / single["wall_s"], 1),
                                         "peak_rss_mib": round(single["peak_rss_mib"], 1)}
            print(row, flush=True)
            for workers, threads in configs:
                with local_cluster(workers, threads) as client:  # puts back the nanny's variables in os.environ
                    out = os.path.join(work, f"cluster{workers}x{threads}.csv")
                    stats, _ = measured([*lensclf, "predict", model, store, "--out", out, "--quiet", "--overwrite",
                                         "--scheduler", client.scheduler.address])
                    assert stats["rc"] == 0, stats
                    peaks = client.run(_worker_peak_mib)
                key = f"cluster_{workers}x{threads}"
                row[key] = {"wall_s": round(stats["wall_s"], 1), "images_per_s": round(n / stats["wall_s"], 1),
                            "client_peak_rss_mib": round(stats["peak_rss_mib"], 1),
                            "worker_peak_rss_mib": sorted(round(v, 1) for v in peaks.values())}
                if single is not None:
                    row[key]["vs_single"] = round(single["wall_s"] / stats["wall_s"], 3)
                print({key: row[key]}, flush=True)
            if n not in resume_n:
                shutil.rmtree(store, ignore_errors=True)
                result["runs"].append(row)
                continue
            # resume: kill the command half-way, then rerun it
            out = os.path.join(work, "resume.zarr")
            command = [*lensclf, "predict", model, store, "--out", out, "--quiet", "--scheduler", "local:2"]
            run = subprocess.Popen(command, start_new_session=True)
            while run.poll() is None:
                try:
                    done = zarr.open_group(out, mode="r")["done"][:]
                    if done.sum() >= len(done) // 2:
                        break
                except Exception:  # noqa: BLE001 - not created yet
                    pass
                time.sleep(0.1)
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
            done_before = int(zarr.open_group(out, mode="r")["done"][:].sum())
            stats, _ = measured(command)
            total = zarr.open_group(out, mode="r")["done"].shape[0]
            row["resume"] = {"blocks": total, "done_before_kill": done_before,
                             "rerun_wall_s": round(stats["wall_s"], 1)}
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(store, ignore_errors=True)
            result["runs"].append(row)
            print(row, flush=True)
        emit_json(result, args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
