"""Authentication at the edge: password hashing and signed tokens.

Everything that needs randomness or a clock lives here, outside the
replicated state machine (raftkv/kv/auth_state.py): a password is hashed
before its command is proposed, and tokens are made and checked by each
node with the cluster's signing key from the replicated auth state.
"""
