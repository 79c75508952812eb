"""Short scripts that reuse gblend_jax's pieces outside its trainer."""
