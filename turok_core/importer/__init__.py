"""``turok-import``: carbon's whisper files copied into Turok's day tables (``cli.py`` is the command).

Pure parts: ``whisper_file`` reads a file, ``layout`` maps carbon's tree to metric names,
``plan`` turns a file's archives into blocks at the Turok schema's resolutions, ``journal``
remembers finished files, ``cost`` estimates the bill; ``run`` drives them with a block store.
"""
