// Anchor TU for the precompiled header.
