"""The gateway's write-ahead spool on local disk: the journal of accepted points and the spool of
encoded SQS bodies, both kept in CRC-framed segment files."""
