"""pytest collects benchmarks/ for doctests; the Locust file is Locust's to run (it monkey-patches with gevent)."""

collect_ignore = ["locustfile.py"]
