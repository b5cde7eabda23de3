"""The one error kind edgeinfer-import reports: a message naming the file,
tensor or node at fault, printed without a traceback."""


class ImportFailed(Exception):
    pass
