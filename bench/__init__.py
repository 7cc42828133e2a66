"""``make bench``: the scale and speed measurements, side by side in one run.

Every measurement runs real processes over loopback: a canned-response API
server pinned to one CPU (``server.py``), and on the other CPU the client under
test: the bare aiohttp loop (the denominator), the naive ``requests`` loop
(``clients.py``), or the real ``blink-watcher run`` daemon. ``inproc.py`` runs
the daemon's ``Service`` inside a bench process for what only the process
itself can count (store transactions) and for experiments (uvloop, orjson,
cProfile). ``scenarios.py`` holds one function per measurement and
``__main__.py`` interleaves the repetitions and prints the table.
"""
