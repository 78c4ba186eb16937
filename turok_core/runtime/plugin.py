"""What every Turok twistd plugin shares: the ``--config`` option and a service maker.

Each daemon has one small plugin file in ``twisted_plugins/`` (installed as ``twisted/plugins``)
naming its service factory as ``module:function``. The factory's module is imported only in
``makeService``, so ``twistd --help`` stays fast and never needs AWS.
"""
from __future__ import annotations

import importlib

from twisted.application.service import IService, IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class TurokOptions(usage.Options):
    optParameters = [["config", "c", None, "Turok configuration file (INI, section [turok])."]]


@implementer(IServiceMaker, IPlugin)
class TurokServiceMaker:
    """A twistd plugin whose service comes from ``factory`` (``"module:function"``) and the config."""

    options = TurokOptions

    def __init__(self, tapname: str, description: str, factory: str) -> None:
        self.tapname = tapname
        self.description = description
        self._factory = factory

    def makeService(self, options: TurokOptions) -> IService:
        from turok_core.model.config import load_config

        module_name, function_name = self._factory.split(":")
        module = importlib.import_module(module_name)
        config = load_config(options["config"])
        tune_process = getattr(module, "tune_gc", None)  # process-wide settings, for a real process only
        if tune_process is not None:
            tune_process(config)
        return getattr(module, function_name)(config)
