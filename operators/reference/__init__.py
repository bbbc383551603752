"""Reference data as plain values: the rules in force, their version, the merchant table.

Pure logic, no I/O: ``connectors/reference/`` loads the data (files,
DynamoDB) and hands it to :class:`~operators.reference.live.ReferenceHolder`.
"""
