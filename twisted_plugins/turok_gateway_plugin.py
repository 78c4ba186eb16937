"""``twistd turok-gateway [--config FILE]``: Carbon plaintext/pickle and StatsD in, Turok messages to SQS.

``--config`` is an INI file (section ``[turok]``; ``$TUROK_CONFIG`` when omitted); ``TUROK_*``
environment variables override it.
"""
from turok_core.runtime.plugin import TurokServiceMaker

gateway = TurokServiceMaker(
    "turok-gateway", "Turok gateway: Carbon plaintext/pickle and StatsD in, Turok messages to SQS.",
    "gateway.service:make_gateway_service")
