"""retained_heap: training steps stop taking their memory back from the kernel page by page."""

import json
import subprocess
import sys
import textwrap

import pytest

from lensclf import _heap

_STEPS = textwrap.dedent("""
    import json, resource, torch
    from lensclf._heap import retained_heap
    from lensclf._models import LensNet

    torch.manual_seed(0)
    net = LensNet()
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
