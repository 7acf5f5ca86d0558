"""Kernel enforcement (``--enforce kernel``): the daemon learns, the kernel's sets enforce.

``elements`` says what the sets hold, from the daemon's tables; ``nftrules`` prints the nft
table whose chains drop by those sets; ``nftsets`` writes them through libnftables; ``sync``
keeps them equal to the daemon's tables and mirrors the locks the kernel makes by itself.
"""
