"""turokd's stage: SQS batches decoded, held in open blocks, each block written once, coarse
archives rolled up whisper's way, new names announced. ``service.py`` is the Twisted shell."""
