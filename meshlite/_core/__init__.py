"""Sans-I/O cores: pure state machines driven by inputs and a caller-supplied clock.

Nothing in this package touches sockets, threads, ``time``, the global ``random``
module or logging configuration.  Each core takes past-tense *inputs* together with
``now`` (monotonic seconds) and returns imperative *effects* for the driver to perform.
"""
