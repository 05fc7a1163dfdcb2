"""Compiled kernels; importing this package loads the OpenMP runtime.

Why this file does something: OpenMP threads that spin while they wait
(libgomp's default) lose their turn on a machine whose cores are busy with
other work, and every minibatch then waits for a descheduled thread: measured
on 2 shared cores, a 0.3 ms minibatch took 10-12 ms. Sleeping threads
("passive" waiting) are woken promptly and cost nothing measurable on an idle
machine. So, unless the user set ``OMP_WAIT_POLICY`` themselves, the runtime
is loaded with it set to ``PASSIVE``, and the variable is removed again so
that nothing else in the process sees it. (The runtime reads it once, when it
is loaded; a runtime another package loaded earlier keeps its own setting.)
"""

import os

_USER_SET = "OMP_WAIT_POLICY" in os.environ
WAIT_POLICY = os.environ["OMP_WAIT_POLICY"] if _USER_SET else "PASSIVE"
os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
try:
    from cbptt._kernels import _network, _utils  # noqa: F401  (loads the runtime)
finally:
    if not _USER_SET:
        del os.environ["OMP_WAIT_POLICY"]
