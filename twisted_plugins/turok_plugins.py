"""twistd plugins: ``twistd turok-gateway``, ``twistd turokd``, ``twistd turok-indexer``.

Each takes ``--config FILE`` (INI, section ``[turok]``; ``$TUROK_CONFIG`` when omitted) and
honours ``TUROK_*`` environment overrides. The services are imported only in ``makeService`` so
``twistd --help`` stays fast and never needs AWS.
"""
from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class TurokOptions(usage.Options):
    optParameters = [["config", "c", None, "Turok configuration file (INI, section [turok])."]]


@implementer(IServiceMaker, IPlugin)
class TurokServiceMaker:
    options = TurokOptions

    def __init__(self, tapname: str, description: str, factory: str) -> None:
        self.tapname = tapname
        self.description = description
        self._factory = factory

    def makeService(self, options):
        import importlib

        from turok_core.model.config import load_config

        module_name, function_name = self._factory.split(":")
        module = importlib.import_module(module_name)
        config = load_config(options["config"])
        tune_process = getattr(module, "tune_gc", None)  # process-wide settings, for a real process only
        if tune_process is not None:
            tune_process(config)
        return getattr(module, function_name)(config)


gateway = TurokServiceMaker(
    "turok-gateway", "Turok gateway: Carbon plaintext/pickle and StatsD in, Turok messages to SQS.",
    "gateway.service:make_gateway_service")
turokd = TurokServiceMaker(
    "turokd", "turokd: Turok messages from SQS, aggregated into DynamoDB day tables.",
    "turok_core.turokd.service:make_turokd_service")
indexer = TurokServiceMaker(
    "turok-indexer", "turok-indexer: new metric names into the sharded S3 index.",
    "turok_core.index.service:make_indexer_service")
