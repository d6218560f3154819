"""Built-in model-family adapters (installed as ``tokenprune.adapters``).

Each module is a plugin registered through the ``tokenprune`` entry-point
group, exactly like an outside plugin, and imports only tokenprune's public
surface.
"""
