"""The local development stack behind ``make run`` and the end-to-end tests: a moto server, the
three twistd services and graphite-web with the Turok finder, all on 127.0.0.1 (``stack``), the
reaper that ends them however the launcher ends (``reaper``), and graphite-web's settings."""
