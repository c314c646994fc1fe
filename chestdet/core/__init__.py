"""What every stage shares: the names of the contracts between stages, errors, label maps, shipped files, image
reading, atomic writes, the stack's shims.
"""
