"""weighted-mtp
"""

__version__ = "0.1"
