"""retained_heap: training steps stop taking their memory back from the kernel page by page."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from lensclf._cpu import heap as _heap

_STEPS = textwrap.dedent("""
    import json, resource, torch
    from lensclf._cpu import retained_heap
    from lensclf._models import LensNet

    torch.manual_seed(0)
    net = LensNet(fast_paths=True)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    x, y = torch.rand(32, 3, 64, 64), torch.randint(0, 2, (32,)).float()

    def faults_per_step(steps=3):
        for _ in range(2):
            step()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(steps):
            step()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps

    def step():
        optimizer.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(net(x), y).backward()
        optimizer.step()

    plain = faults_per_step()
    with retained_heap():
        retained = faults_per_step()
    print(json.dumps({"plain": plain, "retained": retained}))
""")


@pytest.mark.skipif(_heap._glibc() is None, reason="retained_heap only acts on glibc's malloc")
def test_training_steps_inside_retained_heap_stop_faulting_pages_in():
    # A fresh process, so that glibc's own thresholds are in force for the first measurement.
    result = subprocess.run([sys.executable, "-c", _STEPS], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    faults = json.loads(result.stdout.strip().splitlines()[-1])
    if faults["plain"] < 1000:
        pytest.skip(f"this process's allocator keeps its memory already ({faults})")
    assert faults["retained"] < 0.1 * faults["plain"], faults


def test_retained_heap_nests_and_restores_after_errors():
    assert _heap._depth == 0
    with _heap.retained_heap():
        with _heap.retained_heap():
            assert _heap._depth == (2 if _heap._glibc() else 0)
        with pytest.raises(ValueError):
            with _heap.retained_heap():
                raise ValueError("inside")
        assert _heap._depth == (1 if _heap._glibc() else 0)
    assert _heap._depth == 0


_PROBE = textwrap.dedent("""
    import ctypes, json, sys
    import numpy as np
    from lensclf import LensClassifier

    libc = ctypes.CDLL(None)

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def served_by_mmap(size=24 << 20):
        # glibc counts mmapped blocks: a 24 MiB block above the mmap threshold adds one.
        before = libc.mallinfo2().hblks
        block = libc.malloc(size)
        after = libc.mallinfo2().hblks
        libc.free(block)
        return after > before

    from lensclf._cpu import retained_heap

    rng = np.random.default_rng(0)
    X, y = rng.random((24, 3, 32, 32), dtype=np.float32), np.arange(24) % 2
    seen = [served_by_mmap()]
    LensClassifier(max_epochs=1, batch_size=8, verbose=0, random_state=0).fit(X, y)
    seen.append(served_by_mmap())
    with retained_heap():  # the opt-in retention, without training's freed blocks left in the heap
        seen.append(served_by_mmap())
    seen.append(served_by_mmap())
    print(json.dumps(seen))
""")


@pytest.mark.skipif(_heap._glibc() is None, reason="retained_heap only acts on glibc's malloc")
def test_fit_leaves_the_malloc_thresholds_it_found():
    # The process starts with a known mmap threshold of 1 MiB (glibc reads it from the environment),
    # so a 24 MiB block is mmapped. A default fit leaves that as it is (heap retention is opt-in);
    # the opt-in retention raises the threshold to 32 MiB while it is entered (the block comes from
    # the heap) and puts back the 1 MiB it found when it leaves.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20), "MALLOC_TRIM_THRESHOLD_": str(2 << 20)}
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [True, True, False, True]


def test_retained_heap_knows_the_thresholds_it_set():
    found = _heap.current_thresholds()
    with _heap.retained_heap():
        if _heap._glibc() is not None:
            assert _heap.current_thresholds()[_heap.M_MMAP_THRESHOLD] == 32 << 20
    after = _heap.current_thresholds()
    assert all(after[k] == found[k] for k in found if found[k] is not None)
