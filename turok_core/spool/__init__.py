"""The gateway's write-ahead spool on local disk: the journal of accepted points
(``journal``) and the spool of encoded SQS bodies (``bodies``), both kept in CRC-framed segment
files (``segments``), and the outbox's pool-thread work on them (``drain``). No reactor."""
