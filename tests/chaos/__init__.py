"""Multi-host chaos testing: meshlite agents on namespaced hosts, faults, and checkers.

Theory of operation
-------------------
Jepsen's shape, on one machine.  ``bed.py`` runs ``meshlite agent`` on N hosts — Linux
network namespaces on a private bridge (``tests/netns.py``) — with a ``worker.py``
beside each agent recording KV operations, lock holds and what each host sees of the
mesh, all through the local agent's HTTP API and timed on the machine-wide monotonic
clock.  ``faults.py`` injects partitions, asymmetric links, loss, delay, reordering,
pauses and crashes inside the namespaces, and records each as a window: what it cut,
what it impaired, when.  ``checkers.py`` judges the recording after the fact
(linearizability, lost writes, lock overlap and fencing, false deaths, discovery,
reconvergence) and excuses exactly what the windows explain.  ``scenario.py`` ties
them into one run.  ``test_chaos.py`` is the short CI run (every fault kind once);
``benchmarks/chaos.py`` the long, randomly-faulted one.  ``test_checkers.py`` shows
that each checker catches the violation it exists for.
"""
