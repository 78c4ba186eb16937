"""Turok: a Graphite-compatible time-series store on AWS (SQS, DynamoDB, S3)."""
from setuptools import Extension, find_packages, setup

STACK = [  # the embedded local stack: a local AWS endpoint and graphite-web with the Turok finder
    "moto[server]>=5.0,<6",
    "graphite-web==1.1.10",
    "Django>=3.0,<3.1",
    "django-tagging==0.4.3",
    "whisper==1.1.10",
    "cairocffi>=1.6,<2",
    "pyparsing>=3,<4",
    "pytz",
    "six",
]
TEST = ["pytest>=8,<9", "pytest-timeout>=2.3,<3", "statsd>=4,<5", "hypothesis>=6.100,<7",
        "carbon==1.1.10",  # carbon-relay, a real pickle client (GRAPHITE_NO_PREFIX=1 keeps it in the venv)
        # make lint: pinned to a minor release, as new ones add rules and checks that would fail make test
        "ruff>=0.17,<0.18", "mypy>=2.4,<2.5"]

setup(
    name="turok",
    version="0.1.0",
    description="Graphite-compatible time-series store on AWS SQS, DynamoDB and S3",
    python_requires=">=3.11",
    packages=find_packages(include=["turok_core", "turok_core.*", "gateway", "gateway.*",
                                    "finder", "finder.*", "keeper", "keeper.*"]) + ["twisted.plugins"],
    # twistd finds plugins in twisted/plugins: install ours there, as carbon does
    package_dir={"twisted.plugins": "twisted_plugins"},
    package_data={"turok_core.model": ["conf/*.conf"], "keeper": ["templates/*"]},
    install_requires=[
        "twisted>=23.10,<26",
        "boto3>=1.34,<2",
        "msgpack>=1.0,<2",
    ],
    # the gateway's parsing of clean input in C; optional: without a compiler the pure-Python
    # parsers do the same work (turok_core/parse/native.py)
    # and block format v2 in C for turokd and the finder (turok_core/storage/native.py)
    ext_modules=[Extension("turok_core.parse._speedups", ["turok_core/parse/_speedups.c"], optional=True,
                           extra_compile_args=["-O2"]),
                 Extension("turok_core.storage._blockcodec", ["turok_core/storage/_blockcodec.c"], optional=True,
                           depends=[f"turok_core/storage/_blockcodec_{part}.h" for part in ("bits", "doubles")],
                           extra_compile_args=["-O2"]),
                 # and turokd's hot loops: rollups of whole blocks, slots placed into open blocks
                 Extension("turok_core.turokd._speedups", ["turok_core/turokd/_speedups.c"], optional=True,
                           extra_compile_args=["-O2"]),
                 # and turokd's reading of version 2 envelopes into columns (turok_core/wire/codec.py)
                 Extension("turok_core.wire._envelope", ["turok_core/wire/_envelope.c"], optional=True,
                           extra_compile_args=["-O2"])],
    extras_require={"stack": STACK, "test": TEST},
    entry_points={"console_scripts": [
        "turok-provision=turok_core.runtime.provision:main",
        "turok-dev-stack=turok_core.dev.stack:main",
        "turok-keeper=keeper.cli:main",
        "turok-import=turok_core.importer.cli:main",
    ]},
)
