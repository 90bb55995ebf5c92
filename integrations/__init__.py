"""Control plane: WHAT goes WHERE. Sources, destinations, syncs, filters, mappings, and Intercom.

Never imports the data plane (``streaming``).
"""
